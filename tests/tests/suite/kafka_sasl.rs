//! The service on a broker that requires SASL: the local Tansu broker with
//! `--authentication` (SCRAM-SHA-256), a user created beforehand on its
//! SQLite storage. The relay, the delivery consumer and `/readyz` sign in;
//! wrong credentials and none are refused by the broker.

use std::time::Duration;

use e2e::processes::DurableBroker;
use e2e::{eventually, spawn_app_opts, test_kafka, AppOptions};
use infra::kafka::{KafkaSasl, KafkaSecurity, KafkaSource, SaslMechanism};

fn sasl(password: &str) -> KafkaSecurity {
    KafkaSecurity {
        sasl: Some(KafkaSasl {
            mechanism: SaslMechanism::ScramSha256,
            username: "orders".to_owned(),
            password: password.into(),
        }),
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_travel_through_a_broker_that_requires_sasl_scram() {
    let scratch = e2e::scratch_dir("kafka-sasl-");
    let mut broker = DurableBroker::new(
        &scratch.path().join("kafka"),
        Some(scratch.path().join("broker.log")),
    )
    .expect("a broker");
    broker.start().await.expect("start the broker");
    broker
        .create_user("orders", "pass-1c0ffee")
        .await
        .expect("create the user");
    broker.stop().await;
    broker.require_authentication();
    broker
        .start()
        .await
        .expect("restart it with authentication");

    let kafka = KafkaSource {
        brokers: vec![broker.address()],
        security: sasl("pass-1c0ffee"),
        ..test_kafka()
    };
    // Refused: a wrong password, and no credentials at all.
    let wrong = KafkaSource {
        security: sasl("not-the-password"),
        ..kafka.clone()
    };
    let refused = async {
        match wrong.connect(Duration::from_secs(3)).await {
            Ok(client) => client.list_topics().await.is_err(),
            Err(_) => true,
        }
    };
    assert!(refused.await, "a wrong password is refused");
    let anonymous = KafkaSource {
        security: KafkaSecurity::default(),
        ..kafka.clone()
    };
    let refused = async {
        match anonymous.connect(Duration::from_secs(3)).await {
            Ok(client) => client.list_topics().await.is_err(),
            Err(_) => true,
        }
    };
    assert!(refused.await, "a client without credentials is refused");

    // The whole path, signed in: relay, topic, delivery consumer, /readyz.
    let app = spawn_app_opts(AppOptions {
        kafka: Some(kafka),
        ..AppOptions::default()
    })
    .await;
    let order = app.place_ok("sasl-user").await;
    eventually(
        Duration::from_secs(20),
        "the order on the delivery side",
        || async {
            (app.get(&format!("/delivery-ms/sasl-user/{order}"))
                .await
                .status
                == 200)
                .then_some(())
        },
    )
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    drop(app);
    broker.stop().await;
}
