//! Alerting on PostgreSQL: the outbox rows are inserted by the writer in the
//! append's transaction (`writer.rs`); the rest on pooled connections.
//! Threshold alerts are opened under the partial unique index on
//! `(rule_id, subject)` of open ones, so two nodes evaluating the same rule
//! open one alert; deliveries are claimed by a compare-and-set on their due
//! time, so two nodes never attempt one delivery at once.

use async_trait::async_trait;
use tokio_postgres::{GenericClient, Row};

use agentledger_core::{Micros, ProjectId};

use super::PostgresStore;
use super::rows::get;
use crate::alerts::{
    Alert, AlertRule, AlertStatus, AlertStore, AttemptResult, Condition, Delivery, DeliveryStatus,
    Destination, DestinationKind, NewAlert, NewDestination, NewRule, Transition, new_id,
};
use crate::{ProjectRef, StoreError, StoreResult};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what}"))
}

/// Insert an alert and one pending delivery per destination (in the
/// caller's transaction). Returns the alert's id.
pub(crate) async fn insert_alert<C: GenericClient + Sync>(
    c: &C,
    project_id: i64,
    a: &NewAlert,
    now: Micros,
) -> Result<String, tokio_postgres::Error> {
    let id = new_id("alr_");
    c.execute(
        "INSERT INTO alerts (id, project_id, rule_id, rule_name, condition, session_id, event_id,
            subject, value, threshold, message, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12)",
        &[
            &id,
            &project_id,
            &a.rule_id,
            &a.rule_name,
            &a.condition,
            &a.session_id,
            &a.event_id,
            &a.subject,
            &a.value,
            &a.threshold,
            &a.message,
            &now.0,
        ],
    )
    .await?;
    insert_deliveries(
        c,
        project_id,
        &id,
        &a.destinations,
        Transition::Triggered,
        now,
    )
    .await?;
    Ok(id)
}

async fn insert_deliveries<C: GenericClient + Sync>(
    c: &C,
    project_id: i64,
    alert_id: &str,
    destinations: &[String],
    t: Transition,
    now: Micros,
) -> Result<(), tokio_postgres::Error> {
    for d in destinations {
        c.execute(
            "INSERT INTO alert_deliveries (id, project_id, alert_id, destination_id, transition,
                status, attempts, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
            &[
                &new_id("dlv_"),
                &project_id,
                &alert_id,
                d,
                &t.as_str(),
                &now.0,
            ],
        )
        .await?;
    }
    Ok(())
}

const DEST_COLS: &str = "id, project_id, name, kind, url, secret, created_at";

fn destination_from_row(r: &Row) -> StoreResult<Destination> {
    let kind: String = get(r, "kind")?;
    Ok(Destination {
        id: get(r, "id")?,
        project_id: ProjectId(get(r, "project_id")?),
        name: get(r, "name")?,
        kind: DestinationKind::parse(&kind).ok_or_else(|| corrupt("destination kind"))?,
        url: get(r, "url")?,
        secret: get(r, "secret")?,
        created_at: Micros(get(r, "created_at")?),
    })
}

const RULE_COLS: &str = "id, project_id, name, condition, destinations, created_at";

fn rule_from_row(r: &Row) -> StoreResult<AlertRule> {
    let condition: String = get(r, "condition")?;
    let destinations: String = get(r, "destinations")?;
    Ok(AlertRule {
        id: get(r, "id")?,
        project_id: ProjectId(get(r, "project_id")?),
        name: get(r, "name")?,
        condition: serde_json::from_str::<Condition>(&condition)
            .map_err(|_| corrupt("rule condition"))?,
        destinations: serde_json::from_str(&destinations)
            .map_err(|_| corrupt("rule destinations"))?,
        created_at: Micros(get(r, "created_at")?),
    })
}

const ALERT_COLS: &str = "id, project_id, rule_id, rule_name, condition, session_id, event_id, \
    subject, value, threshold, message, status, created_at, resolved_at, triggered_seq, \
    resolved_seq";

fn alert_from_row(r: &Row) -> StoreResult<Alert> {
    let status: String = get(r, "status")?;
    Ok(Alert {
        id: get(r, "id")?,
        project_id: ProjectId(get(r, "project_id")?),
        rule_id: get(r, "rule_id")?,
        rule_name: get(r, "rule_name")?,
        condition: get(r, "condition")?,
        session_id: get(r, "session_id")?,
        event_id: get(r, "event_id")?,
        subject: get(r, "subject")?,
        value: get(r, "value")?,
        threshold: get(r, "threshold")?,
        message: get(r, "message")?,
        status: AlertStatus::parse(&status).ok_or_else(|| corrupt("alert status"))?,
        created_at: Micros(get(r, "created_at")?),
        resolved_at: get::<Option<i64>>(r, "resolved_at")?.map(Micros),
        triggered_seq: get::<Option<i64>>(r, "triggered_seq")?.map(|s| s as u64),
        resolved_seq: get::<Option<i64>>(r, "resolved_seq")?.map(|s| s as u64),
    })
}

const DELIVERY_COLS: &str = "id, project_id, alert_id, destination_id, transition, status, \
    attempts, next_attempt_at, last_error, last_status, created_at, delivered_at";

fn delivery_from_row(r: &Row) -> StoreResult<Delivery> {
    let transition: String = get(r, "transition")?;
    let status: String = get(r, "status")?;
    Ok(Delivery {
        id: get(r, "id")?,
        project_id: ProjectId(get(r, "project_id")?),
        alert_id: get(r, "alert_id")?,
        destination_id: get(r, "destination_id")?,
        transition: Transition::parse(&transition).ok_or_else(|| corrupt("transition"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status"))?,
        attempts: get::<i32>(r, "attempts")? as u32,
        next_attempt_at: Micros(get(r, "next_attempt_at")?),
        last_error: get(r, "last_error")?,
        last_status: get::<Option<i32>>(r, "last_status")?.map(|s| s as u16),
        created_at: Micros(get(r, "created_at")?),
        delivered_at: get::<Option<i64>>(r, "delivered_at")?.map(Micros),
    })
}

fn rows<T>(rows: Vec<Row>, f: fn(&Row) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

#[async_trait]
impl AlertStore for PostgresStore {
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
        let conn = self.conn().await?;
        conn.execute(
            &format!(
                "INSERT INTO alert_destinations ({DEST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            &[
                &row.id,
                &row.project_id.0,
                &row.name,
                &row.kind.as_str(),
                &row.url,
                &row.secret,
                &row.created_at.0,
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(row)
    }

    async fn list_destinations(&self, project: &ProjectRef) -> StoreResult<Vec<Destination>> {
        let conn = self.conn().await?;
        let r = conn
            .query(
                &format!(
                    "SELECT {DEST_COLS} FROM alert_destinations WHERE project_id = $1
                     ORDER BY created_at, id"
                ),
                &[&project.id.0],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows(r, destination_from_row)
    }

    async fn delete_destination(&self, project: &ProjectRef, id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "DELETE FROM alert_destinations WHERE project_id = $1 AND id = $2",
                &[&project.id.0, &id],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    async fn destination_by_id(&self, id: &str) -> StoreResult<Option<Destination>> {
        let conn = self.conn().await?;
        let r = conn
            .query_opt(
                &format!("SELECT {DEST_COLS} FROM alert_destinations WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| self.err(e))?;
        r.as_ref().map(destination_from_row).transpose()
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
        let conn = self.conn().await?;
        conn.execute(
            &format!("INSERT INTO alert_rules ({RULE_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[
                &rule.id,
                &rule.project_id.0,
                &rule.name,
                &condition,
                &dests,
                &rule.created_at.0,
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        Ok(rule)
    }

    async fn list_rules(&self, project: Option<&ProjectRef>) -> StoreResult<Vec<AlertRule>> {
        let conn = self.conn().await?;
        let p = project.map(|p| p.id.0);
        let r = conn
            .query(
                &format!(
                    "SELECT {RULE_COLS} FROM alert_rules
                     WHERE $1::int8 IS NULL OR project_id = $1
                     ORDER BY project_id, created_at, id"
                ),
                &[&p],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows(r, rule_from_row)
    }

    async fn delete_rule(&self, project: &ProjectRef, id: &str) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "DELETE FROM alert_rules WHERE project_id = $1 AND id = $2",
                &[&project.id.0, &id],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    async fn list_alerts(
        &self,
        project: &ProjectRef,
        open_only: bool,
        limit: u32,
    ) -> StoreResult<Vec<Alert>> {
        let conn = self.conn().await?;
        let r = conn
            .query(
                &format!(
                    "SELECT {ALERT_COLS} FROM alerts WHERE project_id = $1
                       AND (NOT $2 OR status = 'open')
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ),
                &[&project.id.0, &open_only, &i64::from(limit)],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows(r, alert_from_row)
    }

    async fn open_threshold_alerts(
        &self,
        project: &ProjectRef,
        rule_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<Alert>> {
        let conn = self.conn().await?;
        let r = conn
            .query(
                &format!(
                    "SELECT {ALERT_COLS} FROM alerts WHERE rule_id = $1
                       AND status = 'open' AND event_id IS NULL AND project_id = $2 LIMIT $3"
                ),
                &[&rule_id, &project.id.0, &i64::from(limit)],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows(r, alert_from_row)
    }

    async fn get_alert(&self, id: &str) -> StoreResult<Option<Alert>> {
        let conn = self.conn().await?;
        let r = conn
            .query_opt(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| self.err(e))?;
        r.as_ref().map(alert_from_row).transpose()
    }

    async fn open_threshold_alert(
        &self,
        project: &ProjectRef,
        a: NewAlert,
    ) -> StoreResult<Option<Alert>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.err(e))?;
        // Under the partial unique index: a second node's insert waits for
        // this one and then does nothing.
        let id = new_id("alr_");
        let now = Micros::now();
        let n = tx
            .execute(
                "INSERT INTO alerts (id, project_id, rule_id, rule_name, condition, session_id,
                    event_id, subject, value, threshold, message, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8, $9, $10, 'open', $11)
                 ON CONFLICT (rule_id, subject) WHERE status = 'open' AND event_id IS NULL
                 DO NOTHING",
                &[
                    &id,
                    &project.id.0,
                    &a.rule_id,
                    &a.rule_name,
                    &a.condition,
                    &a.session_id,
                    &a.subject,
                    &a.value,
                    &a.threshold,
                    &a.message,
                    &now.0,
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Ok(None);
        }
        insert_deliveries(
            &*tx,
            project.id.0,
            &id,
            &a.destinations,
            Transition::Triggered,
            now,
        )
        .await
        .map_err(|e| self.err(e))?;
        let row = tx
            .query_one(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        alert_from_row(&row).map(Some)
    }

    async fn resolve_alert(
        &self,
        project: &ProjectRef,
        id: &str,
        destinations: &[String],
    ) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.err(e))?;
        let now = Micros::now();
        let n = tx
            .execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = $1
                 WHERE project_id = $2 AND id = $3 AND status = 'open'",
                &[&now.0, &project.id.0, &id],
            )
            .await
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Ok(false);
        }
        insert_deliveries(
            &*tx,
            project.id.0,
            id,
            destinations,
            Transition::Resolved,
            now,
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(true)
    }

    async fn alerts_to_record(&self, limit: u32) -> StoreResult<Vec<Alert>> {
        let conn = self.conn().await?;
        let r = conn
            .query(
                &format!(
                    "SELECT {ALERT_COLS} FROM alerts
                     WHERE triggered_seq IS NULL OR (status = 'resolved' AND resolved_seq IS NULL)
                     ORDER BY created_at LIMIT $1"
                ),
                &[&i64::from(limit)],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows(r, alert_from_row)
    }

    async fn mark_alerts_recorded(&self, marks: &[(String, Transition, u64)]) -> StoreResult<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.err(e))?;
        for (id, t, seq) in marks {
            let sql = match t {
                Transition::Triggered => "UPDATE alerts SET triggered_seq = $1 WHERE id = $2",
                Transition::Resolved => "UPDATE alerts SET resolved_seq = $1 WHERE id = $2",
            };
            tx.execute(sql, &[&(*seq as i64), id])
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn due_deliveries(&self, now: Micros, limit: u32) -> StoreResult<Vec<Delivery>> {
        let conn = self.conn().await?;
        let r = conn
            .query(
                &format!(
                    "SELECT {DELIVERY_COLS} FROM alert_deliveries
                     WHERE status = 'pending' AND next_attempt_at <= $1
                     ORDER BY next_attempt_at LIMIT $2"
                ),
                &[&now.0, &i64::from(limit)],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows(r, delivery_from_row)
    }

    async fn claim_delivery(
        &self,
        id: &str,
        due_at: Micros,
        lease_until: Micros,
    ) -> StoreResult<bool> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "UPDATE alert_deliveries SET next_attempt_at = $1
                 WHERE id = $2 AND status = 'pending' AND next_attempt_at = $3",
                &[&lease_until.0, &id, &due_at.0],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    async fn record_attempt(&self, id: &str, result: AttemptResult) -> StoreResult<()> {
        let conn = self.conn().await?;
        let now = Micros::now().0;
        let r = match result {
            AttemptResult::Delivered { status } => {
                conn.execute(
                    "UPDATE alert_deliveries SET status = 'delivered', attempts = attempts + 1,
                        last_status = $1, last_error = NULL, delivered_at = $2 WHERE id = $3",
                    &[&i32::from(status), &now, &id],
                )
                .await
            }
            AttemptResult::Retry {
                error,
                status,
                next_at,
            } => {
                conn.execute(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, last_status = $1,
                        last_error = $2, next_attempt_at = $3 WHERE id = $4",
                    &[&status.map(i32::from), &error, &next_at.0, &id],
                )
                .await
            }
            AttemptResult::Failed { error, status } => {
                conn.execute(
                    "UPDATE alert_deliveries SET status = 'failed', attempts = attempts + 1,
                        last_status = $1, last_error = $2 WHERE id = $3",
                    &[&status.map(i32::from), &error, &id],
                )
                .await
            }
        };
        r.map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn list_deliveries(
        &self,
        project: &ProjectRef,
        alert: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        let conn = self.conn().await?;
        let r = conn
            .query(
                &format!(
                    "SELECT {DELIVERY_COLS} FROM alert_deliveries
                     WHERE project_id = $1 AND ($2::text IS NULL OR alert_id = $2)
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ),
                &[&project.id.0, &alert, &i64::from(limit)],
            )
            .await
            .map_err(|e| self.err(e))?;
        rows(r, delivery_from_row)
    }
}
