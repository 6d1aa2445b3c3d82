//! `orders stores …`: the operators' view and edits of the chain's stores.

use anyhow::Context;
use domain::Stores;
use sqlx::PgPool;

use crate::config::StoresCmd;

pub async fn run(pool: &PgPool, cmd: StoresCmd) -> anyhow::Result<()> {
    match cmd {
        StoresCmd::Show(crate::config::Show { json }) => {
            let stores = crate::stores::load(pool).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&crate::stores::to_json(&stores))?
                );
            } else {
                print!("{}", table(&stores));
            }
        }
        StoresCmd::Set(crate::config::SetFile { file, if_empty }) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let stores = crate::stores::parse(&text)?;
            if if_empty && crate::stores::load(pool).await?.all().len() > 1 {
                println!("stores are set already: left as they are");
                return Ok(());
            }
            crate::stores::replace(pool, &stores).await?;
            let open = stores.all().iter().filter(|s| s.open).count();
            println!("stores set: {} ({open} open)", stores.all().len());
        }
    }
    Ok(())
}

fn table(stores: &Stores) -> String {
    let mut out = format!("{:<16} {:<6} {}\n", "STORE", "OPEN", "NAME");
    for s in stores.all() {
        out.push_str(&format!(
            "{:<16} {:<6} {}\n",
            s.store_id.as_str(),
            if s.open { "yes" } else { "no" },
            s.name
        ));
    }
    out
}
