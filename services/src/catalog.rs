//! What a place-order request is checked against: the chain's menu, its
//! stores (which exist, which are open) and what each has sold out. Held in
//! memory ([`Current`]) while the menu's generation (migrations/0014, moved
//! by any change of the menu, the stores or what is sold out) stays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::{Menu, SoldOut, Store, StoreId, Stores};
use sqlx::PgPool;

use crate::batch::{Collector, Limits};

/// The menu, the stores and what each has sold out, as read together.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The chain's drinks (those sold out at every store marked).
    pub menu: Menu,
    pub stores: Stores,
    pub sold_out: HashMap<StoreId, SoldOut>,
    /// The menu as each store with sold-outs of its own offers it, made once
    /// per read (a place-order asks for it on every request).
    at_stores: HashMap<StoreId, Menu>,
}

impl Catalog {
    /// Reads all of it (in one snapshot: a change in between is one
    /// transaction, seen whole or not at all).
    pub async fn load(pool: &PgPool) -> sqlx::Result<Catalog> {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let menu = crate::menu::load(&mut *tx).await?;
        let stores = crate::stores::load(&mut *tx).await?;
        let sold_out = crate::stores::load_sold_out(&mut *tx).await?;
        tx.commit().await?;
        let at_stores = sold_out
            .iter()
            .map(|(store, out)| (store.clone(), menu.at_store(out)))
            .collect();
        Ok(Catalog {
            menu,
            stores,
            sold_out,
            at_stores,
        })
    }

    pub fn store(&self, id: &StoreId) -> Option<&Store> {
        self.stores.get(id)
    }

    /// The menu as `store` offers it (its sold-out drinks marked).
    pub fn menu_at(&self, store: &StoreId) -> &Menu {
        self.at_stores.get(store).unwrap_or(&self.menu)
    }
}

/// Generation reads in flight at a time, and requests sharing one at most.
const GENERATION_READS: Limits = Limits {
    name: "menu_generation",
    in_flight: 2,
    max_batch: 1024,
    queue: 4096,
};

/// A catalog and the generation it was read at.
type Held = Option<(i64, Arc<Catalog>)>;

/// The catalog as place-order checks it: held in memory with the generation
/// it was read at, and read again whenever the generation in the database
/// is another. Every check reads the generation after its request arrived
/// (the requests waiting at the same time share one read), so it sees every
/// change committed before that, as a read of everything per request did.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Current {
    pool: PgPool,
    held: Arc<Mutex<Held>>,
    generations: Collector<(), i64>,
}

impl Current {
    pub fn new(pool: PgPool) -> Self {
        let generations = Collector::new(GENERATION_READS, {
            let pool = pool.clone();
            move |waiting: Vec<()>| {
                let pool = pool.clone();
                async move {
                    let generation = sqlx::query_scalar!("SELECT generation FROM menu_generation")
                        .fetch_one(&pool)
                        .await?;
                    Ok(vec![generation; waiting.len()])
                }
            }
        });
        Current {
            pool,
            held: Arc::default(),
            generations,
        }
    }

    /// The catalog as it is now.
    pub async fn get(&self) -> sqlx::Result<Arc<Catalog>> {
        let generation = self.generations.ask(()).await?;
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((at, catalog)) = held {
            if at == generation {
                return Ok(catalog);
            }
        }
        // Read after the generation: at least as new as it (a change in
        // between moves the generation again, and the next check reads).
        let catalog = Arc::new(Catalog::load(&self.pool).await?);
        // Two reads racing may leave the older held: the next check finds
        // the generation moved on and reads again.
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, catalog.clone()));
        Ok(catalog)
    }
}
