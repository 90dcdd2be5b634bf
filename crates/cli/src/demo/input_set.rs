//! The demo's input files, loaded from the paths in its arguments and
//! summarized for the output.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use super::DemoArgs;
use super::input::{self, Band, ScanParamKeys, Schedule, ScheduleParams, Source};
use super::reference::group_by_pass;

/// The demo's parsed input files.
pub struct InputSet {
    pub schedule_path: PathBuf,
    pub schedule: Schedule,
    pub sources: Vec<Source>,
    pub bands: Vec<Band>,
    pub params: Option<ScheduleParams>,
    pub scan_param_keys: Option<ScanParamKeys>,
    pub args: DemoArgs,
}

impl InputSet {
    /// Loads and parses every input file the arguments name.
    pub fn load(args: &DemoArgs) -> anyhow::Result<InputSet> {
        let schedule_path = args.schedule.clone().context("--schedule is required unless --write-example is given")?;
        let schedule = input::load(&schedule_path, "schedule", input::parse_schedule)?;
        let sources = match &args.sources {
            Some(path) => input::load(path, "source list", input::parse_sources)?,
            None => Vec::new(),
        };
        let bands = match &args.instrument {
            Some(path) => input::load(path, "instrument file", input::parse_instrument)?,
            None => Vec::new(),
        };
        let params = match &args.params {
            Some(path) => Some(input::load(path, "schedule parameters", input::parse_params)?),
            None => None,
        };
        let scan_param_keys = match &args.scan_params {
            Some(path) => Some(input::load(path, "scan_params key list", input::parse_scan_param_keys)?),
            None => None,
        };
        Ok(InputSet { schedule_path, schedule, sources, bands, params, scan_param_keys, args: args.clone() })
    }

    /// Prints what each input file contains, and notes on scans outside the
    /// schedule parameters.
    pub fn print_summary(&self) {
        println!("== Input");
        self.print_schedule();
        self.print_sources();
        self.print_instrument();
        self.print_params();
        match (&self.args.scan_params, &self.scan_param_keys) {
            (Some(path), Some(keys)) => {
                println!("scan params  {}", path.display());
                println!("             {} allowed keys", keys.len());
            }
            _ => println!("scan params  none given: obs_unit.scan_params stay empty"),
        }
    }

    fn print_schedule(&self) {
        let schedule = &self.schedule;
        let site = &schedule.site;
        println!("schedule     {}", self.schedule_path.display());
        println!(
            "             site {} ({}), latitude {} deg, longitude {} deg, elevation {} m",
            site.name, site.telescope, site.latitude_deg, site.longitude_deg, site.elevation_m
        );

        let passes = group_by_pass(schedule);
        let first = schedule.scans.first().map(|s| s.start);
        let last = schedule.scans.iter().map(|s| s.stop).max();
        if let (Some(first), Some(last)) = (first, last) {
            println!(
                "             {} scans in {} passes, {} to {} UTC",
                schedule.scans.len(),
                passes.len(),
                first.format("%Y-%m-%d %H:%M:%S"),
                last.format("%Y-%m-%d %H:%M:%S")
            );
        }
    }

    fn print_sources(&self) {
        let Some(path) = &self.args.sources else {
            println!("sources      none given: no source obs units");
            return;
        };
        let mut types: BTreeMap<&str, usize> = BTreeMap::new();
        for source in &self.sources {
            *types.entry(source.scan_type.as_str()).or_default() += 1;
        }
        let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} {n}")).collect();
        println!("sources      {}", path.display());
        println!("             {} sources ({})", self.sources.len(), types.join(", "));
    }

    fn print_instrument(&self) {
        let Some(path) = &self.args.instrument else {
            println!("instrument   none given: {} gets one module named `all`", self.args.instrument_name);
            return;
        };
        let bands: Vec<String> = self
            .bands
            .iter()
            .map(|b| format!("{} ({:.0} µm, {} pixels)", b.name, b.wavelength_um, b.spatial_pixels))
            .collect();
        println!("instrument   {}", path.display());
        println!("             {}: {} modules: {}", self.args.instrument_name, self.bands.len(), bands.join(", "));
    }

    fn print_params(&self) {
        let (Some(path), Some(params)) = (&self.args.params, &self.params) else {
            println!("params       none given: the schedule is not checked against constraints");
            return;
        };
        let show = |v: Option<f64>| v.map_or("unset".to_owned(), |v| v.to_string());
        println!("params       {}", path.display());
        println!(
            "             el {} to {} deg, sun avoidance {} deg, longest scan {} s, partial scans {}",
            show(params.el_min_deg),
            show(params.el_max_deg),
            show(params.sun_avoidance_deg),
            show(params.ces_max_time_s),
            if params.partial_scans { "allowed" } else { "not allowed" }
        );

        let findings = params.check(&self.schedule);
        if findings.is_empty() {
            println!("             every scan meets these constraints");
        }
        for finding in findings {
            println!("             note: {finding}");
        }
    }
}
