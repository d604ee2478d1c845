//! ID-JAG issuing policies' SQL, shared by both backends (see [`super::sql`]).

use crate::config::IdJagPolicy;

pub(super) type IdJagPolicyRow = (String, String, String, String, String);

pub(super) fn id_jag_policy_from_row(r: IdJagPolicyRow) -> IdJagPolicy {
    IdJagPolicy {
        client_id: r.0,
        audience: r.1,
        resource: r.2,
        target_client_id: r.3,
        scopes: r
            .4
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

macro_rules! sql_id_jag_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::IdJagPolicyStore for $ty {
            async fn save_id_jag_policy(
                &self,
                p: &$crate::config::IdJagPolicy,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO id_jag_policies \
                     (client_id, audience, resource, target_client_id, scopes, created_at) \
                     VALUES ($1,$2,$3,$4,$5,$6) \
                     ON CONFLICT (client_id, audience, resource) \
                     DO UPDATE SET target_client_id = $4, scopes = $5",
                )
                .bind(&p.client_id)
                .bind(&p.audience)
                .bind(&p.resource)
                .bind(&p.target_client_id)
                .bind(p.scopes.join(" "))
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn id_jag_policies_for(
                &self,
                client_id: &str,
            ) -> Result<Vec<$crate::config::IdJagPolicy>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql_id_jag::IdJagPolicyRow> = sqlx::query_as(
                    "SELECT client_id, audience, resource, target_client_id, scopes \
                     FROM id_jag_policies WHERE client_id = $1 ORDER BY audience, resource",
                )
                .bind(client_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map($crate::store::sql_id_jag::id_jag_policy_from_row)
                    .collect())
            }

            async fn list_id_jag_policies(
                &self,
            ) -> Result<Vec<$crate::config::IdJagPolicy>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql_id_jag::IdJagPolicyRow> = sqlx::query_as(
                    "SELECT client_id, audience, resource, target_client_id, scopes \
                     FROM id_jag_policies ORDER BY client_id, audience, resource",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map($crate::store::sql_id_jag::id_jag_policy_from_row)
                    .collect())
            }

            async fn delete_id_jag_policy(
                &self,
                client_id: &str,
                audience: &str,
                resource: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "DELETE FROM id_jag_policies \
                     WHERE client_id = $1 AND audience = $2 AND resource = $3",
                )
                .bind(client_id)
                .bind(audience)
                .bind(resource)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(super) use sql_id_jag_store;
