//! BulkUpgrade notifications: what a status change tells a webhook (step started and completed,
//! analysis verdict, awaiting approval, failed, cancelled, completed), and the JSON it is sent as.
//!
//! Pure: [`notices`] compares the status before and after one written change, so each
//! transition is told once, by the write that made it; [`payload`] renders one notice as forgeops'
//! JSON or as a Slack-compatible message (`{"text": ...}`).

use serde::Serialize;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{BulkUpgradeState, BulkUpgradeStatus, NotificationFormat, PendingNotification, RolloutPhase};

/// What happened.
pub use crate::api::NotificationEvent as NoticeKind;

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

/// The most notifications kept undelivered in status (`status.outbox`).
pub const OUTBOX_MAX: usize = 50;

/// `next`'s outbox after one decision: the notifications `settled` (delivered, or given up) leave
/// it, those `told` join it numbered on from the last one told, and at most [`OUTBOX_MAX`] stay
/// (the oldest dropped first). Answers how many were dropped.
pub fn file(
    previous: &BulkUpgradeStatus,
    next: &mut BulkUpgradeStatus,
    told: Vec<Notice>,
    settled: &[u32],
    at: &Time,
) -> usize {
    let mut outbox: Vec<PendingNotification> =
        previous.outbox.iter().filter(|n| !settled.contains(&n.id)).cloned().collect();
    let mut last = previous.notifications_told;
    for notice in told {
        last += 1;
        outbox.push(PendingNotification {
            id: last,
            event: notice.kind,
            step: notice.step,
            message: notice.message,
            at: at.clone(),
        });
    }
    let dropped = outbox.len().saturating_sub(OUTBOX_MAX);
    outbox.drain(..dropped);
    next.notifications_told = last;
    next.outbox = outbox;
    dropped
}

/// The notice a pending notification tells.
pub fn notice_of(pending: &PendingNotification) -> Notice {
    Notice { kind: pending.event, step: pending.step, message: pending.message.clone() }
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

    fn told(kind: NoticeKind, step: u32) -> Notice {
        Notice { kind, step: Some(step), message: format!("{kind:?} {step}") }
    }

    fn ids(s: &BulkUpgradeStatus) -> Vec<u32> {
        s.outbox.iter().map(|n| n.id).collect()
    }

    #[test]
    fn told_notifications_wait_in_the_outbox_numbered_until_settled() {
        let at = Time(jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default());
        let before = BulkUpgradeStatus::default();
        let mut first = before.clone();
        let told_now = vec![told(NoticeKind::StepStarted, 1), told(NoticeKind::StepCompleted, 1)];
        assert_eq!(file(&before, &mut first, told_now, &[], &at), 0);
        assert_eq!((ids(&first), first.notifications_told), (vec![1, 2], 2));
        assert_eq!(notice_of(&first.outbox[1]), told(NoticeKind::StepCompleted, 1));
        assert_eq!(first.outbox[0].at, at, "the time it happened, kept for a late delivery");
        // The first delivered; a new one numbered on.
        let mut second = first.clone();
        file(&first, &mut second, vec![told(NoticeKind::Completed, 1)], &[1], &at);
        assert_eq!((ids(&second), second.notifications_told), (vec![2, 3], 3));
        // All settled: the outbox empties, the count stays, so numbers are never reused.
        let mut third = second.clone();
        file(&second, &mut third, vec![], &[2, 3, 99], &at);
        assert_eq!((ids(&third), third.notifications_told), (vec![], 3));
        let mut fourth = third.clone();
        file(&third, &mut fourth, vec![told(NoticeKind::Failed, 2)], &[], &at);
        assert_eq!(ids(&fourth), [4]);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest() {
        let at = Time(jiff::Timestamp::UNIX_EPOCH);
        let before = BulkUpgradeStatus::default();
        let mut next = before.clone();
        let many: Vec<Notice> = (1..=OUTBOX_MAX as u32 + 3).map(|s| told(NoticeKind::StepStarted, s)).collect();
        assert_eq!(file(&before, &mut next, many, &[], &at), 3);
        assert_eq!(next.outbox.len(), OUTBOX_MAX);
        assert_eq!(next.outbox.first().map(|n| n.id), Some(4));
        assert_eq!(next.notifications_told, OUTBOX_MAX as u32 + 3);
    }
}
