//! Alerting on SQLite: reads on the pool, writes on the writer's connection
//! (the outbox inside the append's transaction: `writer.rs`; the rest as
//! `Cmd::Exec`, a transaction each).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use agentledger_core::{Micros, ProjectId};

use super::SqliteStore;
use super::writer::Cmd;
use crate::alerts::{
    Alert, AlertRule, AlertStatus, AlertStore, AttemptResult, Condition, Delivery, DeliveryStatus,
    Destination, DestinationKind, NewAlert, NewDestination, NewRule, Transition, new_id,
};
use crate::{ProjectRef, StoreError, StoreResult};

fn corrupt(what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unreadable {what}").into(),
    )
}

/// Insert an alert and one pending delivery per destination (in the
/// caller's transaction). Returns the alert's id.
pub(crate) fn insert_alert(
    conn: &Connection,
    project_id: i64,
    a: &NewAlert,
    now: Micros,
) -> rusqlite::Result<String> {
    let id = new_id("alr_");
    conn.prepare_cached(
        "INSERT INTO alerts (id, project_id, rule_id, rule_name, condition, session_id, event_id,
            subject, value, threshold, message, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'open', ?12)",
    )?
    .execute(params![
        id,
        project_id,
        a.rule_id,
        a.rule_name,
        a.condition,
        a.session_id,
        a.event_id,
        a.subject,
        a.value,
        a.threshold,
        a.message,
        now.0
    ])?;
    insert_deliveries(
        conn,
        project_id,
        &id,
        &a.destinations,
        Transition::Triggered,
        now,
    )?;
    Ok(id)
}

fn insert_deliveries(
    conn: &Connection,
    project_id: i64,
    alert_id: &str,
    destinations: &[String],
    t: Transition,
    now: Micros,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare_cached(
        "INSERT INTO alert_deliveries (id, project_id, alert_id, destination_id, transition,
            status, attempts, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
    )?;
    for d in destinations {
        st.execute(params![
            new_id("dlv_"),
            project_id,
            alert_id,
            d,
            t.as_str(),
            now.0
        ])?;
    }
    Ok(())
}

const DEST_COLS: &str = "id, project_id, name, kind, url, secret, created_at";

fn destination_from_row(r: &Row<'_>) -> rusqlite::Result<Destination> {
    let kind: String = r.get(3)?;
    Ok(Destination {
        id: r.get(0)?,
        project_id: ProjectId(r.get(1)?),
        name: r.get(2)?,
        kind: DestinationKind::parse(&kind).ok_or_else(|| corrupt("destination kind"))?,
        url: r.get(4)?,
        secret: r.get(5)?,
        created_at: Micros(r.get(6)?),
    })
}

const RULE_COLS: &str = "id, project_id, name, condition, destinations, created_at";

fn rule_from_row(r: &Row<'_>) -> rusqlite::Result<AlertRule> {
    let condition: String = r.get(3)?;
    let destinations: String = r.get(4)?;
    Ok(AlertRule {
        id: r.get(0)?,
        project_id: ProjectId(r.get(1)?),
        name: r.get(2)?,
        condition: serde_json::from_str::<Condition>(&condition)
            .map_err(|_| corrupt("rule condition"))?,
        destinations: serde_json::from_str(&destinations)
            .map_err(|_| corrupt("rule destinations"))?,
        created_at: Micros(r.get(5)?),
    })
}

const ALERT_COLS: &str = "id, project_id, rule_id, rule_name, condition, session_id, event_id, \
    subject, value, threshold, message, status, created_at, resolved_at, triggered_seq, \
    resolved_seq";

fn alert_from_row(r: &Row<'_>) -> rusqlite::Result<Alert> {
    let status: String = r.get(11)?;
    Ok(Alert {
        id: r.get(0)?,
        project_id: ProjectId(r.get(1)?),
        rule_id: r.get(2)?,
        rule_name: r.get(3)?,
        condition: r.get(4)?,
        session_id: r.get(5)?,
        event_id: r.get(6)?,
        subject: r.get(7)?,
        value: r.get(8)?,
        threshold: r.get(9)?,
        message: r.get(10)?,
        status: AlertStatus::parse(&status).ok_or_else(|| corrupt("alert status"))?,
        created_at: Micros(r.get(12)?),
        resolved_at: r.get::<_, Option<i64>>(13)?.map(Micros),
        triggered_seq: r.get::<_, Option<i64>>(14)?.map(|s| s as u64),
        resolved_seq: r.get::<_, Option<i64>>(15)?.map(|s| s as u64),
    })
}

const DELIVERY_COLS: &str = "id, project_id, alert_id, destination_id, transition, status, \
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    let transition: String = r.get(4)?;
    let status: String = r.get(5)?;
    Ok(Delivery {
        id: r.get(0)?,
        project_id: ProjectId(r.get(1)?),
        alert_id: r.get(2)?,
        destination_id: r.get(3)?,
        transition: Transition::parse(&transition).ok_or_else(|| corrupt("transition"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status"))?,
        attempts: r.get::<_, i64>(6)? as u32,
        next_attempt_at: Micros(r.get(7)?),
        last_error: r.get(8)?,
        last_status: r.get::<_, Option<i64>>(9)?.map(|s| s as u16),
        created_at: Micros(r.get(10)?),
        delivered_at: r.get::<_, Option<i64>>(11)?.map(Micros),
    })
}

fn storage(e: rusqlite::Error) -> StoreError {
    super::classify(&e)
}

impl SqliteStore {
    /// Run `f` on the writer's connection, in a transaction of its own.
    pub(super) async fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let out = self
            .admin(|reply| Cmd::Exec {
                run: Box::new(move |c| {
                    f(c).map(|v| Box::new(v) as Box<dyn std::any::Any + Send>)
                        .map_err(storage)
                }),
                reply,
            })
            .await?;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Storage("alerting: an answer of the wrong type".into()))
    }
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn create_destination(
        &self,
        project: &ProjectRef,
        d: NewDestination,
    ) -> StoreResult<Destination> {
        let row = Destination {
            id: new_id("dst_"),
            project_id: project.id,
            name: d.name,
            kind: d.kind,
            url: d.url,
            secret: d.secret,
            created_at: Micros::now(),
        };
        let out = row.clone();
        self.exec(move |c| {
            c.execute(
                &format!("INSERT INTO alert_destinations ({DEST_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    row.id,
                    row.project_id.0,
                    row.name,
                    row.kind.as_str(),
                    row.url,
                    row.secret,
                    row.created_at.0
                ],
            )
            .map(|_| ())
        })
        .await?;
        Ok(out)
    }

    async fn list_destinations(&self, project: &ProjectRef) -> StoreResult<Vec<Destination>> {
        let p = project.id.0;
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {DEST_COLS} FROM alert_destinations WHERE project_id = ?1 ORDER BY created_at, id"
            ))?;
            st.query_map(params![p], destination_from_row)?.collect()
        })
        .await
    }

    async fn delete_destination(&self, project: &ProjectRef, id: &str) -> StoreResult<bool> {
        let (p, id) = (project.id.0, id.to_owned());
        self.exec(move |c| {
            c.execute(
                "DELETE FROM alert_destinations WHERE project_id = ?1 AND id = ?2",
                params![p, id],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn destination_by_id(&self, id: &str) -> StoreResult<Option<Destination>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {DEST_COLS} FROM alert_destinations WHERE id = ?1"),
                params![id],
                destination_from_row,
            )
            .optional()
        })
        .await
    }

    async fn create_rule(&self, project: &ProjectRef, r: NewRule) -> StoreResult<AlertRule> {
        let rule = AlertRule {
            id: new_id("rul_"),
            project_id: project.id,
            name: r.name,
            condition: r.condition,
            destinations: r.destinations,
            created_at: Micros::now(),
        };
        let condition = serde_json::to_string(&rule.condition)
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let dests = serde_json::to_string(&rule.destinations)
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let row = rule.clone();
        self.exec(move |c| {
            c.execute(
                &format!("INSERT INTO alert_rules ({RULE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    row.id,
                    row.project_id.0,
                    row.name,
                    condition,
                    dests,
                    row.created_at.0
                ],
            )
            .map(|_| ())
        })
        .await?;
        Ok(rule)
    }

    async fn list_rules(&self, project: Option<&ProjectRef>) -> StoreResult<Vec<AlertRule>> {
        let p = project.map(|p| p.id.0);
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {RULE_COLS} FROM alert_rules WHERE ?1 IS NULL OR project_id = ?1
                 ORDER BY project_id, created_at, id"
            ))?;
            st.query_map(params![p], rule_from_row)?.collect()
        })
        .await
    }

    async fn delete_rule(&self, project: &ProjectRef, id: &str) -> StoreResult<bool> {
        let (p, id) = (project.id.0, id.to_owned());
        self.exec(move |c| {
            c.execute(
                "DELETE FROM alert_rules WHERE project_id = ?1 AND id = ?2",
                params![p, id],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn list_alerts(
        &self,
        project: &ProjectRef,
        open_only: bool,
        limit: u32,
    ) -> StoreResult<Vec<Alert>> {
        let p = project.id.0;
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {ALERT_COLS} FROM alerts WHERE project_id = ?1
                   AND (?2 = 0 OR status = 'open')
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            ))?;
            st.query_map(params![p, open_only as i64, limit], alert_from_row)?
                .collect()
        })
        .await
    }

    async fn open_threshold_alerts(
        &self,
        project: &ProjectRef,
        rule_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<Alert>> {
        let (p, rule) = (project.id.0, rule_id.to_owned());
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {ALERT_COLS} FROM alerts WHERE rule_id = ?1
                   AND status = 'open' AND event_id IS NULL AND project_id = ?2 LIMIT ?3"
            ))?;
            st.query_map(params![rule, p, limit], alert_from_row)?
                .collect()
        })
        .await
    }

    async fn get_alert(&self, id: &str) -> StoreResult<Option<Alert>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                params![id],
                alert_from_row,
            )
            .optional()
        })
        .await
    }

    async fn open_threshold_alert(
        &self,
        project: &ProjectRef,
        a: NewAlert,
    ) -> StoreResult<Option<Alert>> {
        let p = project.id.0;
        self.exec(move |c| {
            let open: Option<String> = c
                .query_row(
                    "SELECT id FROM alerts WHERE rule_id = ?1 AND subject = ?2
                       AND status = 'open' AND event_id IS NULL",
                    params![a.rule_id, a.subject],
                    |r| r.get(0),
                )
                .optional()?;
            if open.is_some() {
                return Ok(None);
            }
            let id = insert_alert(c, p, &a, Micros::now())?;
            c.query_row(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = ?1"),
                params![id],
                alert_from_row,
            )
            .map(Some)
        })
        .await
    }

    async fn resolve_alert(
        &self,
        project: &ProjectRef,
        id: &str,
        destinations: &[String],
    ) -> StoreResult<bool> {
        let (p, id, dests) = (project.id.0, id.to_owned(), destinations.to_vec());
        self.exec(move |c| {
            let now = Micros::now();
            let n = c.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = ?1
                 WHERE project_id = ?2 AND id = ?3 AND status = 'open'",
                params![now.0, p, id],
            )?;
            if n == 0 {
                return Ok(false);
            }
            insert_deliveries(c, p, &id, &dests, Transition::Resolved, now)?;
            Ok(true)
        })
        .await
    }

    async fn alerts_to_record(&self, limit: u32) -> StoreResult<Vec<Alert>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {ALERT_COLS} FROM alerts
                 WHERE triggered_seq IS NULL OR (status = 'resolved' AND resolved_seq IS NULL)
                 ORDER BY created_at LIMIT ?1"
            ))?;
            st.query_map(params![limit], alert_from_row)?.collect()
        })
        .await
    }

    async fn mark_alerts_recorded(&self, marks: &[(String, Transition, u64)]) -> StoreResult<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let marks = marks.to_vec();
        self.exec(move |c| {
            for (id, t, seq) in &marks {
                let sql = match t {
                    Transition::Triggered => "UPDATE alerts SET triggered_seq = ?1 WHERE id = ?2",
                    Transition::Resolved => "UPDATE alerts SET resolved_seq = ?1 WHERE id = ?2",
                };
                c.prepare_cached(sql)?.execute(params![*seq as i64, id])?;
            }
            Ok(())
        })
        .await
    }

    async fn due_deliveries(&self, now: Micros, limit: u32) -> StoreResult<Vec<Delivery>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {DELIVERY_COLS} FROM alert_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at LIMIT ?2"
            ))?;
            st.query_map(params![now.0, limit], delivery_from_row)?
                .collect()
        })
        .await
    }

    async fn claim_delivery(
        &self,
        id: &str,
        due_at: Micros,
        lease_until: Micros,
    ) -> StoreResult<bool> {
        let id = id.to_owned();
        self.exec(move |c| {
            c.execute(
                "UPDATE alert_deliveries SET next_attempt_at = ?1
                 WHERE id = ?2 AND status = 'pending' AND next_attempt_at = ?3",
                params![lease_until.0, id, due_at.0],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn record_attempt(&self, id: &str, result: AttemptResult) -> StoreResult<()> {
        let id = id.to_owned();
        self.exec(move |c| {
            let now = Micros::now().0;
            match result {
                AttemptResult::Delivered { status } => c.execute(
                    "UPDATE alert_deliveries SET status = 'delivered', attempts = attempts + 1,
                        last_status = ?1, last_error = NULL, delivered_at = ?2 WHERE id = ?3",
                    params![status, now, id],
                ),
                AttemptResult::Retry {
                    error,
                    status,
                    next_at,
                } => c.execute(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, last_status = ?1,
                        last_error = ?2, next_attempt_at = ?3 WHERE id = ?4",
                    params![status, error, next_at.0, id],
                ),
                AttemptResult::Failed { error, status } => c.execute(
                    "UPDATE alert_deliveries SET status = 'failed', attempts = attempts + 1,
                        last_status = ?1, last_error = ?2 WHERE id = ?3",
                    params![status, error, id],
                ),
            }
            .map(|_| ())
        })
        .await
    }

    async fn list_deliveries(
        &self,
        project: &ProjectRef,
        alert: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        let (p, alert) = (project.id.0, alert.map(str::to_owned));
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {DELIVERY_COLS} FROM alert_deliveries
                 WHERE project_id = ?1 AND (?2 IS NULL OR alert_id = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            ))?;
            st.query_map(params![p, alert, limit], delivery_from_row)?
                .collect()
        })
        .await
    }
}
