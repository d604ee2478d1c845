//! The error policy: a store failure is logged with a correlation id and answered with a
//! generic `server_error` (or error page) that names the id; no database text reaches the
//! caller. The database is broken on purpose here (a table dropped behind the server's back).

use serde_json::json;

use crate::both;
use crate::helpers::TestApp;

/// Words a database error would carry.
const DATABASE_WORDS: &[&str] = &["table", "relation", "sqlite", "postgres", "SQL", "column"];

async fn drop_table(app: &TestApp, table: &str) {
    let url = app.config.database_url.clone().unwrap();
    let sql = format!("DROP TABLE {table}");
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("{sql} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

fn generic(text: &str) {
    assert!(
        text.contains("logged as "),
        "names a correlation id: {text}"
    );
    for w in DATABASE_WORDS {
        assert!(!text.contains(w), "no database text ({w}): {text}");
    }
}

both!(store_failures_are_generic, |app: TestApp| async move {
    drop_table(&app, "clients").await;
    // The JSON endpoints: 500 server_error.
    let res = app
        .http
        .post(app.url("/register"))
        .json(&json!({"redirect_uris": ["https://a.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "server_error");
    generic(body["error_description"].as_str().unwrap());
    let res = app
        .http
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "someone"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "server_error");
    generic(body["error_description"].as_str().unwrap());
    // The authorization endpoint: an error page, never a redirect with the text.
    let res = app
        .http
        .get(app.url("/authorize?client_id=someone&response_type=code"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().get("location").is_none());
    generic(&res.text().await.unwrap());
    app
});
