//! `orders menu …`: the operators' view and edits of the menu.

use anyhow::Context;
use domain::{CoffeeName, Menu, OptionValue};
use sqlx::PgPool;

use crate::config::MenuCmd;

pub async fn run(pool: &PgPool, cmd: MenuCmd) -> anyhow::Result<()> {
    match cmd {
        MenuCmd::Show(crate::config::Show { json }) => {
            // As `GET /menu` shows it: the default store's sold-outs.
            let catalog = crate::catalog::Catalog::load(pool).await?;
            let menu = catalog.menu_at(&domain::StoreId::default_store());
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::menu::to_json(menu))?
                );
            } else {
                print!("{}", table(menu));
            }
        }
        MenuCmd::Set(crate::config::SetFile { file, if_empty }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let menu = crate::menu::parse(&text)?;
            if if_empty && !crate::menu::load(pool).await?.is_empty() {
                println!("a menu is set already: left as it is");
                return Ok(());
            }
            crate::menu::replace(pool, &menu).await?;
            println!("menu set: {} drinks", menu.drinks().len());
        }
        MenuCmd::SoldOut { coffee_name, store } => {
            let (name, store) = (name(&coffee_name)?, store_id(store.as_deref())?);
            crate::menu::set_sold_out(pool, store.as_ref(), &name, true).await?;
            println!("{name}: sold out at {}", at(store.as_ref()));
        }
        MenuCmd::Available { coffee_name, store } => {
            let (name, store) = (name(&coffee_name)?, store_id(store.as_deref())?);
            crate::menu::set_sold_out(pool, store.as_ref(), &name, false).await?;
            println!("{name}: on sale at {}", at(store.as_ref()));
        }
        MenuCmd::Clear => {
            crate::menu::replace(pool, &Menu::default()).await?;
            println!("menu cleared: any drink and price in range is accepted");
        }
    }
    Ok(())
}

fn store_id(text: Option<&str>) -> anyhow::Result<Option<domain::StoreId>> {
    text.map(|t| domain::StoreId::parse(t).map_err(|e| anyhow::anyhow!("store: {e}")))
        .transpose()
}

fn at(store: Option<&domain::StoreId>) -> String {
    store.map_or_else(|| "every store".to_owned(), ToString::to_string)
}

fn name(text: &str) -> anyhow::Result<CoffeeName> {
    CoffeeName::parse(text).map_err(|e| anyhow::anyhow!("coffee name: {e}"))
}

fn table(menu: &Menu) -> String {
    if menu.is_empty() {
        return "no menu set: any drink and price in range is accepted\n".to_owned();
    }
    let mut out = format!(
        "{:<24} {:>9} {:>9}  {:<10} {}\n",
        "DRINK", "REGULAR", "LARGE", "SERVED", ""
    );
    for d in menu.drinks() {
        let price = |size| {
            d.prices
                .get(&size)
                .map_or("-".to_owned(), |p| u64::from(*p).to_string())
        };
        let served: Vec<&str> = d.temperatures.iter().map(|t| t.code()).collect();
        out.push_str(&format!(
            "{:<24} {:>9} {:>9}  {:<10} {}\n",
            d.coffee_name.as_str(),
            price(domain::Size::Regular),
            price(domain::Size::Large),
            served.join(","),
            if d.sold_out { "sold out" } else { "" }
        ));
    }
    out
}
