//! Where the menu lives: the `menu` table (migrations/0011) for the
//! chain's drinks (and what is sold out at every store), `sold_out`
//! (migrations/0016) for what one store has sold out; read by `GET /menu`
//! and checked by every place-order request (through
//! [`crate::catalog::Current`]), written by operators (`orders menu …`). A
//! change replaces what readers see in one transaction; the next order is
//! checked against it.

use std::collections::BTreeMap;

use anyhow::Context;
use domain::{CoffeeName, Drink, Menu, OptionValue, Price, Size, StoreId, Temperature};
use sqlx::PgExecutor;

/// The menu's generation now (migrations/0014): moved by every change of
/// the menu, the stores or what is sold out.
pub async fn generation<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<i64> {
    sqlx::query_scalar!("SELECT generation FROM menu_generation")
        .fetch_one(db)
        .await
}

/// The chain's menu as it is now (empty: no menu set), its drinks sold out
/// at every store marked: what one store has sold out is
/// [`crate::stores::load_sold_out`]'s.
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

/// Replaces the whole menu with `menu` (empty: no menu), in one
/// transaction. Its drinks marked sold out are sold out at every store;
/// what single stores have sold out stays.
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

/// Marks one drink sold out (or on sale again) at `store`, or at every
/// store (`None`). Errors when the drink is not on the menu or the store
/// does not exist.
pub async fn set_sold_out(
    pool: &sqlx::PgPool,
    store: Option<&StoreId>,
    name: &CoffeeName,
    sold_out: bool,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let on_menu = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM menu WHERE coffee_name = $1) AS "on!""#,
        name.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;
    if !on_menu {
        anyhow::bail!("{name} is not on the menu (`orders menu show` lists it)");
    }
    match store {
        None => {
            sqlx::query!(
                "UPDATE menu SET sold_out = $2, updated_at = clock_timestamp() WHERE coffee_name = $1",
                name.as_str(),
                sold_out,
            )
            .execute(&mut *tx)
            .await?;
        }
        Some(store) => set_sold_out_at(&mut tx, store, name, sold_out).await?,
    }
    infra::notify::MENU.announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

async fn set_sold_out_at(
    tx: &mut sqlx::PgConnection,
    store: &StoreId,
    name: &CoffeeName,
    sold_out: bool,
) -> anyhow::Result<()> {
    let known = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM stores WHERE store_id = $1) AS "known!""#,
        store.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;
    if !known {
        anyhow::bail!("there is no store {store} (`orders stores show` lists them)");
    }
    if sold_out {
        sqlx::query!(
            "INSERT INTO sold_out (store_id, coffee_name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            store.as_str(),
            name.as_str(),
        )
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query!(
            "DELETE FROM sold_out WHERE store_id = $1 AND coffee_name = $2",
            store.as_str(),
            name.as_str(),
        )
        .execute(&mut *tx)
        .await?;
    }
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
