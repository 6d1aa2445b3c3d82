//! Where the menu lives: the `menu` table (migrations/0011), read by
//! `GET /menu` and checked by every place-order request ([`Current`]: held
//! in memory while its generation, migrations/0014, does not move), written
//! by operators (`orders menu …`). A change replaces what readers see in
//! one transaction; the next order is checked against it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use domain::{CoffeeName, Drink, Menu, OptionValue, Price, Size, Temperature};
use sqlx::{PgExecutor, PgPool};

use crate::batch::{Collector, Limits};

/// The menu as it is now (empty: no menu set).
pub async fn load<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Menu> {
    let rows = sqlx::query!(
        r#"SELECT coffee_name, regular_price, large_price, temperatures, sold_out
             FROM menu ORDER BY position, coffee_name"#
    )
    .fetch_all(db)
    .await?;
    let corrupt = |what: String| sqlx::Error::Decode(what.into());
    let mut drinks = Vec::with_capacity(rows.len());
    for row in rows {
        let coffee_name = CoffeeName::parse(&row.coffee_name)
            .map_err(|e| corrupt(format!("menu: {:?}: {e}", row.coffee_name)))?;
        let mut prices = BTreeMap::new();
        for (size, price) in [
            (Size::Regular, row.regular_price),
            (Size::Large, row.large_price),
        ] {
            if let Some(price) = price {
                let price = Price::from_json(&serde_json::Value::from(price))
                    .map_err(|e| corrupt(format!("menu: {coffee_name} {}: {e}", size.code())))?;
                prices.insert(size, price);
            }
        }
        let temperatures = row
            .temperatures
            .iter()
            .map(|t| Temperature::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(format!("menu: {coffee_name}: {e}")))?;
        drinks.push(Drink {
            coffee_name,
            prices,
            temperatures,
            sold_out: row.sold_out,
        });
    }
    Menu::new(drinks).map_err(|e| corrupt(format!("menu: {e}")))
}

/// Generation reads in flight at a time, and requests sharing one at most.
const GENERATION_READS: Limits = Limits {
    name: "menu_generation",
    in_flight: 2,
    max_batch: 1024,
    queue: 4096,
};

/// A menu and the generation it was read at.
type Held = Option<(i64, Arc<Menu>)>;

/// The menu as place-order checks it: held in memory with the generation
/// it was read at (migrations/0014), and read again whenever the
/// generation in the database is another. Every check reads the generation
/// after its request arrived (the requests waiting at the same time share
/// one read), so it sees every menu change committed before that, as a
/// read of the whole menu per request did. Cheap to clone.
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

    /// The menu as it is now.
    pub async fn get(&self) -> sqlx::Result<Arc<Menu>> {
        let generation = self.generation().await?;
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((at, menu)) = held {
            if at == generation {
                return Ok(menu);
            }
        }
        // Read after the generation: at least as new as it (a change in
        // between moves the generation again, and the next check reads).
        let menu = Arc::new(load(&self.pool).await?);
        // Two reads racing may leave the older held: the next check finds
        // the generation moved on and reads again.
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, menu.clone()));
        Ok(menu)
    }

    /// The generation now, read once for every request waiting on it.
    async fn generation(&self) -> sqlx::Result<i64> {
        self.generations.ask(()).await
    }
}

/// Replaces the whole menu with `menu` (empty: no menu), in one transaction.
pub async fn replace(pool: &sqlx::PgPool, menu: &Menu) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!("DELETE FROM menu").execute(&mut *tx).await?;
    for (position, drink) in menu.drinks().iter().enumerate() {
        let price = |size| {
            drink
                .prices
                .get(&size)
                .map(|p| i32::try_from(u64::from(*p)).unwrap_or(i32::MAX))
        };
        let temperatures: Vec<&str> = drink.temperatures.iter().map(|t| t.code()).collect();
        sqlx::query!(
            "INSERT INTO menu (coffee_name, regular_price, large_price, temperatures, sold_out, position)
             VALUES ($1, $2, $3, $4, $5, $6)",
            drink.coffee_name.as_str(),
            price(Size::Regular),
            price(Size::Large),
            &temperatures as &[&str],
            drink.sold_out,
            i32::try_from(position).unwrap_or(i32::MAX),
        )
        .execute(&mut *tx)
        .await
        .with_context(|| format!("cannot store {}", drink.coffee_name))?;
    }
    infra::notify::MENU.announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Marks one drink sold out (or on sale again). Errors when it is not on
/// the menu.
pub async fn set_sold_out(
    pool: &sqlx::PgPool,
    name: &CoffeeName,
    sold_out: bool,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query!(
        "UPDATE menu SET sold_out = $2, updated_at = clock_timestamp() WHERE coffee_name = $1",
        name.as_str(),
        sold_out,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        anyhow::bail!("{name} is not on the menu (`orders menu show` lists it)");
    }
    infra::notify::MENU.announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Reads a menu in `GET /menu`'s shape (a JSON array of drinks), checked.
pub fn parse(json: &str) -> anyhow::Result<Menu> {
    let drinks: Vec<Drink> = serde_json::from_str(json)
        .context("a menu is a JSON array of drinks, as GET /menu shows them")?;
    Ok(Menu::new(drinks)?)
}

/// The menu in `GET /menu`'s shape.
pub fn to_json(menu: &Menu) -> serde_json::Value {
    serde_json::to_value(menu.drinks()).unwrap_or_default()
}
