//! What `/readyz` and `/healthz` answer, so a kubelet's probes mean something.
//!
//! - Readiness: `503` while starting, until the watch caches have listed once, and while shutting
//!   down; `200` for the leader with synced watches, and `200` for a standby replica, which says it
//!   is standing by (and for whom), so a rolling update of a two-replica Deployment proceeds.
//! - Liveness: `503` once a controller loop has stopped while the process is not shutting down
//!   (the kubelet then restarts the container); `200` otherwise.

use std::sync::Mutex;

/// The replica's part in leader election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not yet known (leader election not decided, or before the controllers start).
    Starting,
    /// Another replica leads; this one waits to take over.
    Standby { leader: String },
    /// This replica runs the controllers.
    Leader,
}

/// The facts the probes answer from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub role: Role,
    /// Every watch cache has listed once.
    pub synced: bool,
    /// Controller loops that stopped.
    pub stopped: Vec<&'static str>,
    pub shutting_down: bool,
}

impl Default for State {
    fn default() -> Self {
        State { role: Role::Starting, synced: false, stopped: Vec::new(), shutting_down: false }
    }
}

/// Readiness: whether the replica is ready, and what it says.
pub fn readiness(s: &State) -> (bool, String) {
    if s.shutting_down {
        return (false, "shutting down".into());
    }
    match &s.role {
        Role::Starting => (false, "starting".into()),
        Role::Standby { leader } => (true, format!("standby: {leader} is the leader")),
        Role::Leader if !s.synced => (false, "leader: the watch caches are not synced yet".into()),
        Role::Leader if !s.stopped.is_empty() => {
            (false, format!("leader: controller loops stopped: {}", s.stopped.join(", ")))
        }
        Role::Leader => (true, "leader: watches synced, controllers running".into()),
    }
}

/// Liveness: whether the process works, and what it says.
pub fn liveness(s: &State) -> (bool, String) {
    if !s.stopped.is_empty() && !s.shutting_down {
        return (false, format!("controller loops stopped: {}", s.stopped.join(", ")));
    }
    (true, "ok".into())
}

/// The replica's health, shared by the operator and its probe endpoints.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

impl Health {
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_role(&self, role: Role) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).role = role;
    }

    pub fn set_synced(&self, synced: bool) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).synced = synced;
    }

    /// A controller loop ended.
    pub fn stopped(&self, controller: &'static str) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).stopped.push(controller);
    }

    pub fn shutting_down(&self) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).shutting_down = true;
    }

    pub fn readiness(&self) -> (bool, String) {
        readiness(&self.state())
    }

    pub fn liveness(&self) -> (bool, String) {
        liveness(&self.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_role_and_the_watches() {
        let mut s = State::default();
        assert!(!readiness(&s).0, "starting");
        s.role = Role::Standby { leader: "forgeops-abc".into() };
        assert_eq!(readiness(&s), (true, "standby: forgeops-abc is the leader".into()));
        s.role = Role::Leader;
        assert!(!readiness(&s).0, "leader, watches not synced");
        s.synced = true;
        assert!(readiness(&s).0);
        assert!(readiness(&s).1.starts_with("leader"));
        s.shutting_down = true;
        assert!(!readiness(&s).0);
    }

    #[test]
    fn liveness_fails_once_a_controller_loop_stopped_unless_shutting_down() {
        let mut s = State { role: Role::Leader, synced: true, ..Default::default() };
        assert!(liveness(&s).0);
        s.stopped.push("installation");
        assert_eq!(liveness(&s), (false, "controller loops stopped: installation".into()));
        assert!(!readiness(&s).0);
        s.shutting_down = true;
        assert!(liveness(&s).0);
    }
}
