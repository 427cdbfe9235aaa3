//! The operator's admin state of backends (ready, drain, maintenance), set
//! through the API, by VIP and backend name.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// An operator's say over a backend, beside its health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    #[default]
    Ready,
    /// No new flows; established ones continue.
    Drain,
    /// Out of service: established flows are re-selected.
    Maint,
}

/// Admin states by VIP name, then backend name; `Ready`, the default, is not stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdminStates(HashMap<String, HashMap<String, Admin>>);

impl AdminStates {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, vip: &str, backend: &str) -> Admin {
        self.0.get(vip).and_then(|backends| backends.get(backend)).copied().unwrap_or_default()
    }

    pub fn set(&mut self, vip: &str, backend: &str, admin: Admin) {
        if admin == Admin::Ready {
            self.forget_backend(vip, backend);
        } else {
            self.0.entry(vip.to_owned()).or_default().insert(backend.to_owned(), admin);
        }
    }

    pub fn forget_vip(&mut self, vip: &str) {
        self.0.remove(vip);
    }

    pub fn forget_backend(&mut self, vip: &str, backend: &str) {
        if let Some(backends) = self.0.get_mut(vip) {
            backends.remove(backend);
            if backends.is_empty() {
                self.0.remove(vip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_the_default_and_is_not_stored() {
        let mut admin = AdminStates::new();
        assert_eq!(admin.get("web", "b1"), Admin::Ready);
        admin.set("web", "b1", Admin::Drain);
        admin.set("web", "b2", Admin::Maint);
        assert_eq!((admin.get("web", "b1"), admin.get("web", "b2")), (Admin::Drain, Admin::Maint));
        admin.set("web", "b1", Admin::Ready);
        admin.forget_backend("web", "b2");
        assert_eq!(admin, AdminStates::new());
        admin.set("db", "b1", Admin::Maint);
        admin.forget_vip("db");
        assert_eq!(admin, AdminStates::new());
    }
}
