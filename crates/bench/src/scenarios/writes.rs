//! Buffered writes: single creates, bulk registrations of 100 files and
//! finishes, each with one client and with many. Each series runs once with
//! main unreachable, which measures the buffer alone, and once with main
//! reachable on loopback, where the drain runs at the same time and
//! competes for the CPU.

use std::sync::Arc;

use super::{Context, pending_transactions, register_files, start_units};
use crate::api::Api;
use crate::measure::{Measurement, closed_loop};
use crate::report::{Report, ResultRow};
use crate::service::{Main, Service, with_service};

/// Requests sent before each measured series so connections and caches are
/// warm; their records stay in the buffer.
const WARM_UP: usize = 50;

pub async fn run(context: &Context, report: &mut Report, states: &[Main]) -> anyhow::Result<()> {
    report.section("Buffered writes");
    for &main in states {
        let (tag, label) = match main {
            Main::Down => ("writes-down", "main down"),
            Main::Up => ("writes-up", "main up"),
        };
        eprintln!("load: writes with {label}");
        with_service(&context.settings, &context.redis, tag, main, async |service: &Service| {
            measure_writes(context, service, label, report).await
        })
        .await?;
    }
    Ok(())
}

async fn measure_writes(context: &Context, service: &Service, label: &str, report: &mut Report) -> anyhow::Result<()> {
    let sizes = &context.settings.sizes;
    let budget = sizes.max_measurement;
    let api = &service.api;
    let reference = &context.reference;
    let drain_note = match label {
        "main down" => "main unreachable, so the drain does not run",
        _ => "main reachable on loopback, so the drain runs at the same time",
    };

    let (warm_up, _) = start_units(api, reference, 1, WARM_UP, budget).await;
    warm_up.check("warm-up")?;

    // Single creates; their ids are the units of the bulk writes and finishes.
    let mut units = Vec::new();
    for (clients, total) in [(1, sizes.single_one), (sizes.clients, sizes.single_many)] {
        let pending = pending_transactions(api).await?;
        let (measurement, ids) = start_units(api, reference, clients, total, budget).await;
        measurement.check("single create")?;
        units.push(ids.into_iter().map(|created| created.id).collect::<Vec<_>>());
        let mut row = ResultRow::latency(format!("single create ({label})"), &measurement, budget);
        row.note("POST /executed_obs_units/start").note(drain_note).note(pending_note(api, pending).await?);
        report.add(row);
    }

    let all_units: Vec<String> = units.concat();
    let mut offset = 0;
    for (clients, total) in [(1, sizes.bulk_one), (sizes.clients, sizes.bulk_many)] {
        let pending = pending_transactions(api).await?;
        let measurement = register_files(
            api,
            reference,
            &context.settings.run_tag,
            &all_units,
            clients,
            total,
            sizes.files_per_bulk,
            offset,
            budget,
        )
        .await;
        offset += total;
        measurement.check("bulk create")?;
        let mut row =
            ResultRow::latency(format!("bulk {} files ({label})", sizes.files_per_bulk), &measurement, budget);
        if let Some(rate) = measurement.throughput() {
            row.note(format!("{:.0} files/s", rate * sizes.files_per_bulk as f64));
        }
        row.note("POST /raw_data_files/bulk").note(drain_note).note(pending_note(api, pending).await?);
        report.add(row);
    }

    // Each finish closes a unit started above, one finish per unit.
    for (clients, targets) in [(1, &units[0]), (sizes.clients, &units[1])] {
        let pending = pending_transactions(api).await?;
        let measurement = finish_units(service, clients, targets, budget).await;
        measurement.check("finish")?;
        let mut row = ResultRow::latency(format!("finish ({label})"), &measurement, budget);
        row.note("PUT /executed_obs_units/{id}/finish of a unit started in this run")
            .note(drain_note)
            .note(pending_note(api, pending).await?);
        report.add(row);
    }
    Ok(())
}

/// Describes the buffer before and after a series, because a write's cost
/// may depend on how many transactions are pending.
async fn pending_note(api: &Api, before: u64) -> anyhow::Result<String> {
    let after = pending_transactions(api).await?;
    Ok(format!("{before} transactions pending before, {after} after"))
}

async fn finish_units(service: &Service, clients: usize, units: &[String], budget: std::time::Duration) -> Measurement {
    let api = service.api.clone();
    let units = Arc::new(units.to_vec());
    closed_loop(clients, units.len(), budget, move |i| {
        let api = api.clone();
        let path = format!("/executed_obs_units/{}/finish", units[i]);
        async move {
            let reply = api.send(reqwest::Method::PUT, &path, Some(b"{}".to_vec())).await?;
            let elapsed = reply.elapsed;
            reply.expect(200, &format!("PUT {path}"))?;
            Ok(elapsed)
        }
    })
    .await
}
