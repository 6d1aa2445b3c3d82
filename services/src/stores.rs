//! Where the stores live: the `stores` table and what each has sold out
//! (`sold_out`, migrations/0016); read by `GET /stores` and by every
//! place-order request (through [`crate::catalog::Current`]), written by
//! operators (`orders stores …`, `orders menu sold-out … --store`).

use std::collections::HashMap;

use anyhow::Context;
use domain::{CoffeeName, SoldOut, Store, StoreId, Stores};
use sqlx::PgExecutor;

/// The stores as they are now (the default store at least).
pub async fn load<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Stores> {
    let rows = sqlx::query!("SELECT store_id, name, open FROM stores ORDER BY position, store_id")
        .fetch_all(db)
        .await?;
    let corrupt = |what: String| sqlx::Error::Decode(what.into());
    let mut stores = Vec::with_capacity(rows.len());
    for row in rows {
        let store_id = StoreId::parse(&row.store_id)
            .map_err(|e| corrupt(format!("stores: {:?}: {e}", row.store_id)))?;
        stores.push(Store {
            store_id,
            name: row.name,
            open: row.open,
        });
    }
    if stores.is_empty() {
        // A database whose stores someone emptied by hand: the default
        // store still takes the orders that name none.
        return Ok(Stores::default());
    }
    Stores::new(stores).map_err(|e| corrupt(format!("stores: {e}")))
}

/// What each store has sold out (stores with nothing sold out are absent).
pub async fn load_sold_out<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<HashMap<StoreId, SoldOut>> {
    let rows = sqlx::query!("SELECT store_id, coffee_name FROM sold_out")
        .fetch_all(db)
        .await?;
    let mut sold_out: HashMap<StoreId, SoldOut> = HashMap::new();
    for row in rows {
        // A row no value type accepts (written by hand) marks nothing.
        if let (Ok(store), Ok(name)) = (
            StoreId::parse(&row.store_id),
            CoffeeName::parse(&row.coffee_name),
        ) {
            sold_out.entry(store).or_default().insert(name);
        }
    }
    Ok(sold_out)
}

/// Replaces the stores with `stores`, in one transaction: new ones are
/// added, listed ones renamed, opened or closed, and unlisted ones removed
/// (with what they had sold out). Their orders stay in the log and the
/// read models; a removed store takes no new orders.
pub async fn replace(pool: &sqlx::PgPool, stores: &Stores) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let ids: Vec<&str> = stores.all().iter().map(|s| s.store_id.as_str()).collect();
    sqlx::query!(
        "DELETE FROM stores WHERE NOT (store_id = ANY($1))",
        &ids as &[&str]
    )
    .execute(&mut *tx)
    .await?;
    for (position, store) in stores.all().iter().enumerate() {
        sqlx::query!(
            "INSERT INTO stores (store_id, name, open, position) VALUES ($1, $2, $3, $4)
             ON CONFLICT (store_id) DO UPDATE
                SET name = EXCLUDED.name, open = EXCLUDED.open, position = EXCLUDED.position,
                    updated_at = clock_timestamp()",
            store.store_id.as_str(),
            store.name,
            store.open,
            i32::try_from(position).unwrap_or(i32::MAX),
        )
        .execute(&mut *tx)
        .await
        .with_context(|| format!("cannot store {}", store.store_id))?;
    }
    infra::notify::MENU.announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Reads stores in `GET /stores`'s shape (a JSON array), checked.
pub fn parse(json: &str) -> anyhow::Result<Stores> {
    let stores: Vec<Store> = serde_json::from_str(json).context(
        "stores are a JSON array of {\"store_id\", \"name\", \"open\"}, as GET /stores shows them",
    )?;
    Ok(Stores::new(stores)?)
}

/// The stores in `GET /stores`'s shape.
pub fn to_json(stores: &Stores) -> serde_json::Value {
    serde_json::to_value(stores.all()).unwrap_or_default()
}
