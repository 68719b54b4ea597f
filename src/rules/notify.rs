//! BulkUpgrade notifications: what a status change tells a webhook (step started and completed,
//! analysis verdict, awaiting approval, failed, cancelled, completed), and the JSON it is sent as.
//!
//! Pure: [`notices`] compares the status before and after one written change, so each
//! transition is told once, by the write that made it; [`payload`] renders one notice as forgeops'
//! JSON or as a Slack-compatible message (`{"text": ...}`).

use serde::Serialize;

use crate::api::{BulkUpgradeState, BulkUpgradeStatus, NotificationFormat, RolloutPhase};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NoticeKind {
    StepStarted,
    StepCompleted,
    AnalysisVerdict,
    AwaitingApproval,
    Failed,
    Cancelled,
    Completed,
}

/// One notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub kind: NoticeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    pub message: String,
}

fn state(s: &BulkUpgradeStatus) -> BulkUpgradeState {
    s.state.unwrap_or_default()
}

/// What changed from `before` to `after`, in the order it happened.
pub fn notices(before: &BulkUpgradeStatus, after: &BulkUpgradeStatus) -> Vec<Notice> {
    use BulkUpgradeState::*;
    let mut out = Vec::new();
    let had_step = |step: u32| before.rollouts.iter().any(|r| r.step == step);
    let mut started: Vec<u32> = after.rollouts.iter().map(|r| r.step).filter(|s| !had_step(*s)).collect();
    started.dedup();
    // A step completed: the upgrade left Running with its last rollout done, unless a window
    // holds the next part of the same step.
    let last = after.rollouts.last();
    let step_done = state(before) == Running
        && state(after) != Running
        && last.is_some_and(|r| r.status == RolloutPhase::Complete)
        && !(state(after) == OutsideWindow && after.step == last.map(|r| r.step));
    if let (true, Some(r)) = (step_done, last) {
        let upgraded: u32 = after.rollouts.iter().filter(|x| x.step == r.step).map(|x| x.completed).sum();
        let failed: u32 = after.rollouts.iter().filter(|x| x.step == r.step).map(|x| x.failed).sum();
        out.push(Notice {
            kind: NoticeKind::StepCompleted,
            step: Some(r.step),
            message: format!("step {} completed: {upgraded} upgraded, {failed} failed", r.step),
        });
    }
    for a in after.analyses.iter().filter(|a| !before.analyses.iter().any(|b| b.step == a.step)) {
        out.push(Notice {
            kind: NoticeKind::AnalysisVerdict,
            step: Some(a.step),
            message: format!("step {}'s analysis: {:?}: {}", a.step, a.verdict, a.message),
        });
    }
    for step in started {
        let (from, to) = after
            .rollouts
            .iter()
            .find(|r| r.step == step)
            .map(|r| (r.source_version.clone(), r.target_version.clone()))
            .unwrap_or_default();
        out.push(Notice {
            kind: NoticeKind::StepStarted,
            step: Some(step),
            message: format!("step {step} started: {from} -> {to}"),
        });
    }
    if state(before) != state(after) {
        let ready = after.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
        let kind = match state(after) {
            AwaitingApproval => Some(NoticeKind::AwaitingApproval),
            Failed => Some(NoticeKind::Failed),
            Cancelled => Some(NoticeKind::Cancelled),
            Complete => Some(NoticeKind::Completed),
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(Notice { kind, step: after.step, message: ready });
        }
    }
    out
}

/// The body posted for `notice` about BulkUpgrade `namespace/name`.
pub fn payload(
    format: NotificationFormat,
    namespace: &str,
    name: &str,
    notice: &Notice,
    at: &str,
) -> serde_json::Value {
    match format {
        NotificationFormat::Json => serde_json::json!({
            "apiVersion": "forgeops.dev/v1alpha1",
            "kind": "BulkUpgradeNotification",
            "bulkUpgrade": {"namespace": namespace, "name": name},
            "event": notice.kind,
            "step": notice.step,
            "message": notice.message,
            "time": at,
        }),
        NotificationFormat::Slack => serde_json::json!({
            "text": format!("BulkUpgrade {namespace}/{name}: {:?}: {}", notice.kind, notice.message),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnalysisRecord, AnalysisVerdict, CohortFigures, RolloutRecord};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn record(step: u32, status: RolloutPhase) -> RolloutRecord {
        RolloutRecord {
            id: format!("r{step}"),
            step,
            source_version: "1.0.0".into(),
            target_version: "2.0.0".into(),
            source_version_id: "a".into(),
            target_version_id: "b".into(),
            limit: None,
            upgrade_limit: None,
            status,
            started_at: None,
            completed_at: None,
            completed: 2,
            failed: 0,
            pending: 0,
            remaining: None,
            adopted: false,
            forgotten: false,
            reconstructed: false,
        }
    }

    fn status(state: BulkUpgradeState, rollouts: Vec<RolloutRecord>) -> BulkUpgradeStatus {
        BulkUpgradeStatus { state: Some(state), rollouts, step: Some(1), ..Default::default() }
    }

    fn kinds(n: &[Notice]) -> Vec<NoticeKind> {
        n.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn each_transition_is_told_once_by_the_change_that_made_it() {
        use BulkUpgradeState::*;
        let pending = status(Pending, vec![]);
        let running = status(Running, vec![record(1, RolloutPhase::Running)]);
        assert_eq!(kinds(&notices(&pending, &running)), [NoticeKind::StepStarted]);
        assert_eq!(notices(&running, &running), [], "a poll that changes nothing tells nothing");
        let mut analysed = status(Analyzing, vec![record(1, RolloutPhase::Complete)]);
        assert_eq!(kinds(&notices(&running, &analysed)), [NoticeKind::StepCompleted]);
        let before = analysed.clone();
        analysed.analyses.push(AnalysisRecord {
            step: 1,
            verdict: AnalysisVerdict::Inconclusive,
            window_start: Time(jiff::Timestamp::UNIX_EPOCH),
            window_end: Time(jiff::Timestamp::UNIX_EPOCH),
            cohort: CohortFigures::default(),
            baseline: CohortFigures::default(),
            message: "too little".into(),
        });
        analysed.state = Some(AwaitingApproval);
        assert_eq!(kinds(&notices(&before, &analysed)), [NoticeKind::AnalysisVerdict, NoticeKind::AwaitingApproval]);
        let mut second = status(Running, vec![record(1, RolloutPhase::Complete), record(2, RolloutPhase::Running)]);
        second.analyses = analysed.analyses.clone();
        assert_eq!(kinds(&notices(&analysed, &second)), [NoticeKind::StepStarted]);
        let mut done = second.clone();
        done.state = Some(Complete);
        done.rollouts[1].status = RolloutPhase::Complete;
        assert_eq!(kinds(&notices(&second, &done)), [NoticeKind::StepCompleted, NoticeKind::Completed]);
        let mut cancelled = second.clone();
        cancelled.state = Some(Cancelled);
        cancelled.rollouts[1].status = RolloutPhase::Cancelled;
        assert_eq!(kinds(&notices(&second, &cancelled)), [NoticeKind::Cancelled]);
        let mut failed = before.clone();
        failed.state = Some(Failed);
        assert_eq!(kinds(&notices(&before, &failed)), [NoticeKind::Failed]);
    }

    #[test]
    fn a_window_between_parts_of_one_step_is_no_step_completed() {
        let running = status(BulkUpgradeState::Running, vec![record(1, RolloutPhase::Running)]);
        let held = status(BulkUpgradeState::OutsideWindow, vec![record(1, RolloutPhase::Complete)]);
        assert_eq!(notices(&running, &held), []);
    }

    #[test]
    fn payloads_are_forgeops_json_or_slack_text() {
        let n = Notice { kind: NoticeKind::Failed, step: Some(1), message: "analysis failed".into() };
        let json = payload(NotificationFormat::Json, "ns", "bu", &n, "2026-12-07T10:00:00Z");
        assert_eq!(json["event"], "Failed");
        assert_eq!(json["bulkUpgrade"]["name"], "bu");
        assert_eq!(json["step"], 1);
        let slack = payload(NotificationFormat::Slack, "ns", "bu", &n, "2026-12-07T10:00:00Z");
        assert_eq!(slack["text"], "BulkUpgrade ns/bu: Failed: analysis failed");
    }
}
