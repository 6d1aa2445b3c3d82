//! What a place-order request is checked against: the chain's menu, its
//! stores (which exist, which are open) and what each has sold out. Held in
//! memory ([`Current`]) with the menu's generation it was read at
//! (migrations/0014, moved by any change of the menu, the stores or what is
//! sold out). A placement is checked against the held catalog with no
//! round trip, and its append is made on condition that the generation is
//! still that one (`EventStore::place`): a change committed before the
//! append fails it, the catalog is read again and the order checked again,
//! so no change is missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::{Menu, SoldOut, Store, StoreId, Stores};
use sqlx::PgPool;

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
        Ok(Catalog::load_with_generation(pool).await?.1)
    }

    /// [`Catalog::load`], with the menu's generation of the same snapshot.
    pub async fn load_with_generation(pool: &PgPool) -> sqlx::Result<(i64, Catalog)> {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let generation = crate::menu::generation(&mut *tx).await?;
        let menu = crate::menu::load(&mut *tx).await?;
        let stores = crate::stores::load(&mut *tx).await?;
        let sold_out = crate::stores::load_sold_out(&mut *tx).await?;
        tx.commit().await?;
        let at_stores = sold_out
            .iter()
            .map(|(store, out)| (store.clone(), menu.at_store(out)))
            .collect();
        let catalog = Catalog {
            menu,
            stores,
            sold_out,
            at_stores,
        };
        Ok((generation, catalog))
    }

    pub fn store(&self, id: &StoreId) -> Option<&Store> {
        self.stores.get(id)
    }

    /// The menu as `store` offers it (its sold-out drinks marked).
    pub fn menu_at(&self, store: &StoreId) -> &Menu {
        self.at_stores.get(store).unwrap_or(&self.menu)
    }
}

/// A catalog and the generation it was read at.
pub type Held = (i64, Arc<Catalog>);

/// The catalog as place-order checks it, held in memory with the
/// generation it was read at. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Current {
    pool: PgPool,
    held: Arc<Mutex<Option<Held>>>,
}

impl Current {
    pub fn new(pool: PgPool) -> Self {
        Current {
            pool,
            held: Arc::default(),
        }
    }

    /// The catalog held (read on first use), and its generation: the
    /// append that acts on it checks that the generation still holds.
    pub async fn held(&self) -> sqlx::Result<Held> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match held {
            Some(held) => Ok(held),
            None => self.refresh().await,
        }
    }

    /// Whether the menu's generation is no longer `generation`: a refusal
    /// by the held catalog is made only by a current one.
    pub async fn moved_from(&self, generation: i64) -> sqlx::Result<bool> {
        Ok(crate::menu::generation(&self.pool).await? != generation)
    }

    /// Reads the catalog again, with its generation (in one snapshot), and
    /// holds it: after an append found the generation moved.
    pub async fn refresh(&self) -> sqlx::Result<Held> {
        let (generation, catalog) = Catalog::load_with_generation(&self.pool).await?;
        let fresh = (generation, Arc::new(catalog));
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        // Two reads racing: the newer generation stays.
        if held.as_ref().is_none_or(|(at, _)| *at <= generation) {
            *held = Some(fresh.clone());
        }
        Ok(fresh)
    }
}
