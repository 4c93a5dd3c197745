//! The registry's state in PostgreSQL. Registrations for one subject are serialised by an
//! advisory lock, so two concurrent registrations cannot both pass the compatibility check
//! against the same latest version.

use apache_avro::Schema;
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    compat::{self, Level},
    error::{Error, Result},
};

/// A version as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub schema: String,
}

/// `latest` (or -1), or a version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i32),
}

impl VersionSpec {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "latest" | "-1" => Ok(VersionSpec::Latest),
            other => match other.parse::<i32>() {
                Ok(n) if n > 0 => Ok(VersionSpec::Number(n)),
                _ => Err(Error::InvalidVersion(other.to_owned())),
            },
        }
    }

    fn describe(self) -> String {
        match self {
            VersionSpec::Latest => "latest".into(),
            VersionSpec::Number(n) => n.to_string(),
        }
    }
}

/// Parses an Avro schema and returns it with its normalised text.
pub fn normalize(text: &str) -> Result<(Schema, String)> {
    let schema = Schema::parse_str(text).map_err(|e| Error::InvalidSchema(e.to_string()))?;
    let normalized =
        serde_json::to_string(&schema).map_err(|e| Error::InvalidSchema(e.to_string()))?;
    Ok((schema, normalized))
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

type Row = (i32, i32, String);

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Live versions of `subject`, oldest first: (version, schema id, schema).
    async fn live(&self, conn: impl sqlx::PgExecutor<'_>, subject: &str) -> Result<Vec<Row>> {
        Ok(sqlx::query_as(
            "SELECT v.version, s.id, s.normalized FROM subject_versions v JOIN schemas s ON s.id = v.schema_id \
             WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version",
        )
        .bind(subject)
        .fetch_all(conn)
        .await?)
    }

    /// The level that applies to `subject`: its own, else the global one, else BACKWARD.
    pub async fn effective_level(
        &self,
        conn: impl sqlx::PgExecutor<'_>,
        subject: &str,
    ) -> Result<Level> {
        let levels: Vec<(String, String)> =
            sqlx::query_as("SELECT subject, compatibility FROM config WHERE subject IN ($1, '')")
                .bind(subject)
                .fetch_all(conn)
                .await?;
        let pick = |s: &str| {
            levels
                .iter()
                .find(|(k, _)| k == s)
                .and_then(|(_, l)| Level::parse(l))
        };
        Ok(pick(subject).or_else(|| pick("")).unwrap_or(Level::DEFAULT))
    }

    /// Registers `text` under `subject`; the same schema again returns its existing id.
    pub async fn register(&self, subject: &str, text: &str) -> Result<i32> {
        let (schema, normalized) = normalize(text)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('oms-registry:' || $1))")
            .bind(subject)
            .execute(&mut *tx)
            .await?;
        let live = self.live(&mut *tx, subject).await?;
        if let Some((_, id, _)) = live.iter().find(|(_, _, existing)| *existing == normalized) {
            return Ok(*id);
        }
        let level = self.effective_level(&mut *tx, subject).await?;
        let existing: Vec<(i32, Schema)> = live
            .iter()
            .map(|(version, _, text)| Ok((*version, normalize(text)?.0)))
            .collect::<Result<_>>()?;
        compat::check(level, &schema, &existing).map_err(|details| Error::Incompatible {
            subject: subject.to_owned(),
            details,
        })?;
        let id: i32 = sqlx::query_scalar(
            "INSERT INTO schemas (normalized) VALUES ($1) \
             ON CONFLICT (normalized) DO UPDATE SET normalized = EXCLUDED.normalized RETURNING id",
        )
        .bind(&normalized)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO subject_versions (subject, version, schema_id) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2 FROM subject_versions WHERE subject = $1",
        )
        .bind(subject)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT subject FROM subject_versions WHERE $1 OR NOT deleted ORDER BY subject",
        )
        .bind(include_deleted)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<i32>> {
        let versions: Vec<i32> = sqlx::query_scalar(
            "SELECT version FROM subject_versions WHERE subject = $1 AND ($2 OR NOT deleted) ORDER BY version",
        )
        .bind(subject)
        .bind(include_deleted)
        .fetch_all(&self.pool)
        .await?;
        if versions.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    pub async fn version(&self, subject: &str, spec: VersionSpec) -> Result<Registered> {
        let live = self.live(&self.pool, subject).await?;
        if live.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let found = match spec {
            VersionSpec::Latest => live.last(),
            VersionSpec::Number(n) => live.iter().find(|(v, _, _)| *v == n),
        };
        let (version, id, schema) = found.cloned().ok_or_else(|| Error::VersionNotFound {
            subject: subject.to_owned(),
            version: spec.describe(),
        })?;
        Ok(Registered {
            subject: subject.to_owned(),
            version,
            id,
            schema,
        })
    }

    pub async fn schema(&self, id: i32) -> Result<String> {
        sqlx::query_scalar("SELECT normalized FROM schemas WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::SchemaNotFound(id.to_string()))
    }

    /// The subjects and versions a schema id is registered under.
    pub async fn usages(&self, id: i32) -> Result<Vec<(String, i32)>> {
        Ok(sqlx::query_as(
            "SELECT subject, version FROM subject_versions WHERE schema_id = $1 AND NOT deleted ORDER BY subject, version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The version of `subject` that holds `text`, if any.
    pub async fn lookup(&self, subject: &str, text: &str) -> Result<Registered> {
        let (_, normalized) = normalize(text)?;
        let live = self.live(&self.pool, subject).await?;
        if live.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let (version, id, schema) = live
            .into_iter()
            .find(|(_, _, existing)| *existing == normalized)
            .ok_or_else(|| Error::SchemaNotFound(format!("for subject '{subject}'")))?;
        Ok(Registered {
            subject: subject.to_owned(),
            version,
            id,
            schema,
        })
    }

    /// Whether `text` is compatible with one version of `subject`, at the subject's level.
    pub async fn compatible(
        &self,
        subject: &str,
        spec: VersionSpec,
        text: &str,
    ) -> Result<Vec<String>> {
        let (schema, _) = normalize(text)?;
        let against = self.version(subject, spec).await?;
        let level = self.effective_level(&self.pool, subject).await?.single();
        let (old, _) = normalize(&against.schema)?;
        Ok(compat::check(level, &schema, &[(against.version, old)])
            .err()
            .unwrap_or_default())
    }

    /// The level set for `subject`, or the global one (`subject` = None).
    pub async fn level(&self, subject: Option<&str>) -> Result<Option<Level>> {
        let level: Option<String> =
            sqlx::query_scalar("SELECT compatibility FROM config WHERE subject = $1")
                .bind(subject.unwrap_or(""))
                .fetch_optional(&self.pool)
                .await?;
        Ok(level.as_deref().and_then(Level::parse))
    }

    pub async fn set_level(&self, subject: Option<&str>, level: Level) -> Result<()> {
        sqlx::query(
            "INSERT INTO config (subject, compatibility) VALUES ($1, $2) \
             ON CONFLICT (subject) DO UPDATE SET compatibility = EXCLUDED.compatibility",
        )
        .bind(subject.unwrap_or(""))
        .bind(level.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a subject's own level; returns what it was.
    pub async fn delete_level(&self, subject: &str) -> Result<Level> {
        let removed: Option<String> = sqlx::query_scalar(
            "DELETE FROM config WHERE subject = $1 AND subject <> '' RETURNING compatibility",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        removed
            .as_deref()
            .and_then(Level::parse)
            .ok_or_else(|| Error::SubjectConfigNotFound(subject.to_owned()))
    }

    /// Soft-deletes every live version, or permanently removes a soft-deleted subject.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT version, deleted FROM subject_versions WHERE subject = $1 ORDER BY version FOR UPDATE",
        )
        .bind(subject)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let versions: Vec<i32> = if permanent {
            if rows.iter().any(|(_, deleted)| !deleted) {
                return Err(Error::SubjectNotSoftDeleted(subject.to_owned()));
            }
            sqlx::query("DELETE FROM subject_versions WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM config WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            rows.iter().map(|(v, _)| *v).collect()
        } else {
            let live: Vec<i32> = rows
                .iter()
                .filter(|(_, deleted)| !deleted)
                .map(|(v, _)| *v)
                .collect();
            if live.is_empty() {
                return Err(Error::SubjectNotFound(subject.to_owned()));
            }
            sqlx::query("UPDATE subject_versions SET deleted = true WHERE subject = $1")
                .bind(subject)
                .execute(&mut *tx)
                .await?;
            live
        };
        tx.commit().await?;
        Ok(versions)
    }

    /// Soft-deletes one version, or permanently removes a soft-deleted one.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i32> {
        let rows: Vec<(i32, bool)> = sqlx::query_as(
            "SELECT version, deleted FROM subject_versions WHERE subject = $1 ORDER BY version",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(Error::SubjectNotFound(subject.to_owned()));
        }
        let not_found = || Error::VersionNotFound {
            subject: subject.to_owned(),
            version: spec.describe(),
        };
        let (version, deleted) = match spec {
            VersionSpec::Latest => rows
                .iter()
                .rev()
                .find(|(_, d)| !d)
                .copied()
                .ok_or_else(not_found)?,
            VersionSpec::Number(n) => rows
                .iter()
                .find(|(v, _)| *v == n)
                .copied()
                .ok_or_else(not_found)?,
        };
        match (permanent, deleted) {
            (false, true) => return Err(not_found()),
            (true, false) => {
                return Err(Error::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                });
            }
            (false, false) => sqlx::query(
                "UPDATE subject_versions SET deleted = true WHERE subject = $1 AND version = $2",
            ),
            (true, true) => {
                sqlx::query("DELETE FROM subject_versions WHERE subject = $1 AND version = $2")
            }
        }
        .bind(subject)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(version)
    }
}
