//! Reference data of a run, created directly on main: an observing program,
//! the instrument with its modules, and the obs units. These tables get
//! their keys from sequences on main, so the site API rejects creating
//! them through the buffer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value as Json;

use super::input::{Band, Scan, ScanParamKeys, ScanParamsBuilder, Schedule, ScheduleParams, Source};
use super::services::{STATEMENT_TIMEOUT, within};

/// Solar-system bodies a patch name may name; such a patch gets the
/// `body` scan parameter.
const SOLAR_SYSTEM_BODIES: &[&str] =
    &["sun", "moon", "mercury", "venus", "mars", "jupiter", "saturn", "uranus", "neptune"];

/// Maximum time the replica may take to show the reference data.
const REPLICA_WAIT: Duration = Duration::from_secs(60);

/// Inputs of the run's reference data.
pub struct ReferenceInput<'a> {
    pub program_short_name: &'a str,
    pub instrument_name: &'a str,
    pub schedule: &'a Schedule,
    pub sources: &'a [Source],
    pub bands: &'a [Band],
    pub params: Option<&'a ScheduleParams>,
    pub scan_param_keys: Option<&'a ScanParamKeys>,
}

/// An instrument module as created on main.
#[derive(Debug, Clone)]
pub struct Module {
    pub id: i32,
    pub name: String,
}

/// The column values of one instrument module.
struct ModuleRow {
    name: String,
    center_frequency_ghz: Option<f64>,
    wavelength_um: Option<f64>,
    spatial_pixels: Option<i32>,
}

impl ModuleRow {
    fn from_band(band: &Band) -> ModuleRow {
        ModuleRow {
            name: band.name.clone(),
            center_frequency_ghz: Some(band.center_frequency_ghz),
            wavelength_um: Some(band.wavelength_um),
            spatial_pixels: i32::try_from(band.spatial_pixels).ok(),
        }
    }
}

/// The keys main assigned to the run's reference data.
#[derive(Debug, Clone)]
pub struct Reference {
    pub program_id: i32,
    pub instrument_id: i32,
    pub modules: Vec<Module>,
    /// Obs unit id of each (patch, pass) of the schedule.
    pub pass_units: BTreeMap<(String, u32), i32>,
    pub source_units: Vec<i32>,
    /// scan_params keys the demo wanted to set but the allowed list lacks.
    pub rejected_keys: BTreeSet<String>,
}

impl Reference {
    /// Ids of the obs units the schedule's scans belong to.
    pub fn pass_unit_ids(&self) -> Vec<i32> {
        self.pass_units.values().copied().collect()
    }

    fn obs_unit_count(&self) -> i64 {
        (self.pass_units.len() + self.source_units.len()) as i64
    }
}

/// Collects scan parameters, keeping the keys the allowed list rejects.
struct ScanParams<'k> {
    builder: Option<ScanParamsBuilder<'k>>,
    rejected: &'k mut BTreeSet<String>,
}

impl<'k> ScanParams<'k> {
    fn new(keys: Option<&'k ScanParamKeys>, rejected: &'k mut BTreeSet<String>) -> Self {
        ScanParams { builder: keys.map(ScanParamsBuilder::new), rejected }
    }

    fn set(&mut self, key: &str, value: impl Into<Json>) {
        if let Some(builder) = &mut self.builder
            && builder.insert(key, value).is_err()
        {
            self.rejected.insert(key.to_owned());
        }
    }

    fn into_json_text(self) -> String {
        let params = self.builder.map(ScanParamsBuilder::build).unwrap_or_default();
        Json::Object(params).to_string()
    }
}

/// Creates the run's reference data on main in one database transaction.
/// The instrument and its modules are shared by runs: they are created
/// when missing and updated from the instrument file otherwise.
pub async fn create(main: &mut tokio_postgres::Client, input: &ReferenceInput<'_>) -> anyhow::Result<Reference> {
    within(STATEMENT_TIMEOUT * 2, "creating the reference data on main", async {
        let tx = main.transaction().await?;
        let site = &input.schedule.site;

        let description = match input.params {
            Some(p) => format!(
                "Replay of a planned night at {} ({}); elevation window {:?} to {:?} deg, sun avoidance {:?} deg, longest scan {:?} s.",
                site.name, site.telescope, p.el_min_deg, p.el_max_deg, p.sun_avoidance_deg, p.ces_max_time_s
            ),
            None => format!("Replay of a planned night at {} ({}).", site.name, site.telescope),
        };
        let program_id: i32 = tx
            .query_one(
                "INSERT INTO observing_program (short_name, title, description) \
                 VALUES ($1, $2, $3) RETURNING id",
                &[
                    &input.program_short_name,
                    &format!("opsbuffer demo night, {}", input.program_short_name),
                    &description,
                ],
            )
            .await
            .context("cannot create the observing program")?
            .get(0);

        let instrument_id: i32 = tx
            .query_one(
                "INSERT INTO instrument (name, telescope, kind, description) \
                 VALUES ($1, $2, 'camera', $3) \
                 ON CONFLICT (name) DO UPDATE SET telescope = EXCLUDED.telescope \
                 RETURNING id",
                &[
                    &input.instrument_name,
                    &site.telescope,
                    &"Created by opsbuffer demo; one module per band of the instrument file.",
                ],
            )
            .await
            .context("cannot create the instrument")?
            .get(0);

        // Without an instrument file the instrument gets one module that
        // represents all of its detectors.
        let module_rows: Vec<ModuleRow> = if input.bands.is_empty() {
            vec![ModuleRow {
                name: "all".to_owned(),
                center_frequency_ghz: None,
                wavelength_um: None,
                spatial_pixels: None,
            }]
        } else {
            input.bands.iter().map(ModuleRow::from_band).collect()
        };
        let mut modules = Vec::new();
        for row in module_rows {
            let id: i32 = tx
                .query_one(
                    "INSERT INTO instrument_module \
                     (instrument_id, name, center_frequency_ghz, wavelength_um, spatial_pixels) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (instrument_id, name) DO UPDATE SET \
                     center_frequency_ghz = EXCLUDED.center_frequency_ghz, \
                     wavelength_um = EXCLUDED.wavelength_um, \
                     spatial_pixels = EXCLUDED.spatial_pixels \
                     RETURNING id",
                    &[
                        &instrument_id,
                        &row.name,
                        &row.center_frequency_ghz,
                        &row.wavelength_um,
                        &row.spatial_pixels,
                    ],
                )
                .await
                .with_context(|| format!("cannot create the instrument module {}", row.name))?
                .get(0);
            modules.push(Module { id, name: row.name });
        }

        let mut rejected_keys = BTreeSet::new();
        let mut pass_units = BTreeMap::new();
        for ((patch, pass), scans) in group_by_pass(input.schedule) {
            let az_min = scans.iter().map(|s| s.az_min_deg).fold(f64::INFINITY, f64::min);
            let az_max = scans.iter().map(|s| s.az_max_deg).fold(f64::NEG_INFINITY, f64::max);
            // A pass is one constant-elevation scan, so the first subscan's
            // elevation is the pass's elevation.
            let el = scans[0].el_deg;
            let scan_params = pass_scan_params(
                input.scan_param_keys,
                scans[0],
                input.params,
                &mut rejected_keys,
            );
            let id: i32 = tx
                .query_one(
                    "INSERT INTO obs_unit (observing_program_id, name, target, scan_type, \
                     az_min_deg, az_max_deg, el_deg, scan_params) \
                     VALUES ($1, $2, $3, 'constant_el', $4, $5, $6, $7::text::jsonb) RETURNING id",
                    &[
                        &program_id,
                        &format!("{patch} pass {pass}"),
                        &patch,
                        &az_min,
                        &az_max,
                        &el,
                        &scan_params,
                    ],
                )
                .await
                .with_context(|| format!("cannot create the obs unit of {patch} pass {pass}"))?
                .get(0);
            pass_units.insert((patch, pass), id);
        }

        let mut source_units = Vec::new();
        for source in input.sources {
            let scan_params = source_scan_params(input.scan_param_keys, source, &mut rejected_keys);
            let id: i32 = tx
                .query_one(
                    "INSERT INTO obs_unit (observing_program_id, name, target, scan_type, \
                     ra_deg, dec_deg, width_deg, height_deg, velocity_deg_s, priority, scan_params) \
                     VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb) RETURNING id",
                    &[
                        &program_id,
                        &source.name,
                        &source.scan_type,
                        &source.ra_deg,
                        &source.dec_deg,
                        &source.width_deg,
                        &source.height_deg,
                        &source.velocity_deg_s,
                        &source.priority,
                        &scan_params,
                    ],
                )
                .await
                .with_context(|| {
                    format!("cannot create the obs unit of source {} (line {})", source.name, source.line)
                })?
                .get(0);
            source_units.push(id);
        }

        tx.commit().await.context("cannot commit the reference data")?;
        Ok(Reference {
            program_id,
            instrument_id,
            modules,
            pass_units,
            source_units,
            rejected_keys,
        })
    })
    .await
}

/// Groups the schedule's scans by (patch, pass), in schedule order within
/// each group.
pub fn group_by_pass(schedule: &Schedule) -> BTreeMap<(String, u32), Vec<&Scan>> {
    let mut groups: BTreeMap<(String, u32), Vec<_>> = BTreeMap::new();
    for scan in &schedule.scans {
        groups.entry((scan.patch.clone(), scan.pass)).or_default().push(scan);
    }
    groups
}

/// Waits until the replica shows the run's obs units and modules.
pub async fn wait_for_replica(local: &tokio_postgres::Client, reference: &Reference) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let module_ids: Vec<i32> = reference.modules.iter().map(|m| m.id).collect();
    loop {
        let row = within(STATEMENT_TIMEOUT, "counting reference rows on the replica", async {
            Ok(local
                .query_one(
                    "SELECT (SELECT count(*) FROM obs_unit WHERE observing_program_id = $1), \
                            (SELECT count(*) FROM instrument_module WHERE id = ANY($2))",
                    &[&reference.program_id, &module_ids],
                )
                .await?)
        })
        .await?;
        let units: i64 = row.get(0);
        let modules: i64 = row.get(1);
        if units == reference.obs_unit_count() && modules == module_ids.len() as i64 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > REPLICA_WAIT {
            bail!(
                "the replica shows {units} of {} obs units and {modules} of {} modules after {REPLICA_WAIT:?}; is replay paused or is replication broken?",
                reference.obs_unit_count(),
                module_ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds the `scan_params` of a pass's obs unit as JSON text, from its
/// first subscan.
fn pass_scan_params(
    keys: Option<&ScanParamKeys>,
    first: &Scan,
    params: Option<&ScheduleParams>,
    rejected: &mut BTreeSet<String>,
) -> String {
    let mut scan_params = ScanParams::new(keys, rejected);
    let body = first.patch.to_lowercase();
    if SOLAR_SYSTEM_BODIES.contains(&body.as_str()) {
        scan_params.set("body", body);
    }
    scan_params.set("el_bore", first.el_deg);
    scan_params.set("boresight_rot", first.rotation_deg);
    if let Some(p) = params {
        scan_params.set("allow_partial", p.partial_scans);
    }
    scan_params.into_json_text()
}

/// Builds the `scan_params` of a source's obs unit as JSON text. RA and DEC
/// are in degrees, and `v_az` is set only for constant-elevation scans.
fn source_scan_params(keys: Option<&ScanParamKeys>, source: &Source, rejected: &mut BTreeSet<String>) -> String {
    let mut scan_params = ScanParams::new(keys, rejected);
    scan_params.set("ra", source.ra_deg);
    scan_params.set("dec", source.dec_deg);
    if source.scan_type == "constant_el" {
        scan_params.set("v_az", source.velocity_deg_s);
    }
    scan_params.into_json_text()
}

#[cfg(test)]
mod tests {
    use super::super::input::{parse_schedule, parse_sources};
    use super::*;
    use serde_json::Map;

    fn keys(list: &[&str]) -> ScanParamKeys {
        ScanParamKeys::new(list.iter().map(|k| k.to_string()))
    }

    fn object(text: &str) -> Map<String, Json> {
        serde_json::from_str(text).unwrap()
    }

    fn jupiter() -> Schedule {
        parse_schedule("#h\nSite TEL 0 0 0\n 2030-01-01 10:00:00  2030-01-01 10:13:00 5.0 Jupiter 1 2 40.05 0 0\n")
            .unwrap()
    }

    #[test]
    fn pass_params_keep_allowed_keys() {
        let allowed = keys(&["body", "el_bore", "boresight_rot", "allow_partial"]);
        let params = ScheduleParams { partial_scans: false, ..ScheduleParams::default() };
        let mut rejected = BTreeSet::new();
        let text = pass_scan_params(Some(&allowed), &jupiter().scans[0], Some(&params), &mut rejected);
        let params = object(&text);
        assert_eq!(params["body"], "jupiter");
        assert_eq!(params["el_bore"], 40.05);
        assert_eq!(params["boresight_rot"], 5.0);
        assert_eq!(params["allow_partial"], false);
        assert!(rejected.is_empty(), "{rejected:?}");
    }

    #[test]
    fn pass_params_report_rejected_keys() {
        let allowed = keys(&["body"]);
        let mut rejected = BTreeSet::new();
        let text = pass_scan_params(Some(&allowed), &jupiter().scans[0], None, &mut rejected);
        assert_eq!(object(&text).len(), 1, "{text}");
        let rejected: Vec<_> = rejected.into_iter().collect();
        assert_eq!(rejected, vec!["boresight_rot".to_owned(), "el_bore".to_owned()]);
    }

    #[test]
    fn pass_params_empty_without_key_list() {
        let mut rejected = BTreeSet::new();
        let text = pass_scan_params(None, &jupiter().scans[0], None, &mut rejected);
        assert_eq!(text, "{}");
        assert!(rejected.is_empty());
    }

    #[test]
    fn source_params_velocity_only_for_constant_el() {
        let sources = parse_sources(
            "name,RA,DEC,width,height,priority,velocity,scan_type\n\
             A,01:00:00,-10:00:00,1,1,1,0.7,constant_el\n\
             B,02:00:00,-20:00:00,1,1,1,0.4,daisy\n",
        )
        .unwrap();
        let allowed = keys(&["ra", "dec", "v_az"]);
        let mut rejected = BTreeSet::new();
        let first = object(&source_scan_params(Some(&allowed), &sources[0], &mut rejected));
        let second = object(&source_scan_params(Some(&allowed), &sources[1], &mut rejected));
        assert_eq!(first["ra"], 15.0);
        assert_eq!(first["v_az"], 0.7);
        assert_eq!(second["dec"], -20.0);
        assert!(!second.contains_key("v_az"));
    }
}
