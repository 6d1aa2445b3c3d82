//! The chain's stores: where an order is for, whether it takes orders now,
//! and which drinks it has sold out. The menu (drinks, sizes, prices) is the
//! chain's; availability is each store's.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::values::{CoffeeName, StoreId};

/// One store, in the shape `GET /stores` shows (and operators set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub store_id: StoreId,
    /// What customers and staff see: 1 to 100 characters.
    pub name: String,
    /// A closed store takes no orders.
    #[serde(default = "open_by_default")]
    pub open: bool,
}

fn open_by_default() -> bool {
    true
}

impl Store {
    pub const MAX_NAME_LEN: usize = 100;

    /// The default store, as it is before operators set any.
    pub fn default_store() -> Store {
        Store {
            store_id: StoreId::default_store(),
            name: "본점".to_owned(),
            open: true,
        }
    }
}

/// Why a list of stores cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is listed twice")]
    Duplicate(String),
    #[error("{0}: a store's name is 1 to 100 characters (not only spaces, no control characters)")]
    BadName(String),
    #[error(
        "the default store {} must stay: orders that name no store go there",
        StoreId::DEFAULT
    )]
    NoDefault,
}

/// The chain's stores, in the order they are listed. Always holds the
/// default store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stores {
    stores: Vec<Store>,
}

impl Default for Stores {
    fn default() -> Self {
        Stores {
            stores: vec![Store::default_store()],
        }
    }
}

impl Stores {
    /// `stores`, checked: ids unique, names 1 to 100 characters after
    /// trimming, the default store among them.
    pub fn new(stores: Vec<Store>) -> Result<Stores, StoreError> {
        let mut seen = BTreeSet::new();
        let mut checked = Vec::with_capacity(stores.len());
        for mut store in stores {
            let id = store.store_id.to_string();
            if !seen.insert(id.clone()) {
                return Err(StoreError::Duplicate(id));
            }
            let name = store.name.trim();
            if name.is_empty()
                || name.chars().count() > Store::MAX_NAME_LEN
                || name.chars().any(char::is_control)
            {
                return Err(StoreError::BadName(id));
            }
            store.name = name.to_owned();
            checked.push(store);
        }
        if !seen.contains(StoreId::DEFAULT) {
            return Err(StoreError::NoDefault);
        }
        Ok(Stores { stores: checked })
    }

    pub fn all(&self) -> &[Store] {
        &self.stores
    }

    pub fn get(&self, id: &StoreId) -> Option<&Store> {
        self.stores.iter().find(|s| &s.store_id == id)
    }
}

/// The drinks sold out at one store.
pub type SoldOut = BTreeSet<CoffeeName>;
