//! Parsers for the demo's input files: a TOAST ground schedule, a source
//! list, the instrument YAML of the CCAT sensitivity calculator, the
//! argument list of `toast_ground_schedule`, and the list of `scan_params`
//! keys that the telescope-control layer accepts.
//!
//! Every parser takes the file's text, so the unit tests below run on
//! inline text. Errors name the line (or the YAML key) and the fix.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

/// Reads a file and parses it, naming the file in any error.
pub fn load<T>(path: &Path, what: &str, parse: fn(&str) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid {what} {}", path.display()))
}

// ---------------------------------------------------------------------------
// TOAST ground schedule

/// The site line of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    pub telescope: String,
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    pub elevation_m: f64,
}

/// One row of a schedule: a constant-elevation subscan.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Line number in the schedule file, starting at 1.
    pub line: usize,
    pub start: DateTime<Utc>,
    pub stop: DateTime<Utc>,
    /// Boresight rotation in degrees.
    pub rotation_deg: f64,
    pub patch: String,
    pub az_min_deg: f64,
    pub az_max_deg: f64,
    pub el_deg: f64,
    pub pass: u32,
    pub sub: u32,
}

impl Scan {
    /// Length of the subscan in seconds.
    pub fn duration_s(&self) -> i64 {
        (self.stop - self.start).num_seconds()
    }
}

/// A parsed TOAST ground schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub site: Site,
    pub scans: Vec<Scan>,
}

const SCHEDULE_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Parses a TOAST ground schedule: `#` comment and header lines, one site
/// line (site name, telescope, latitude, longitude, elevation), then one
/// row per subscan.
///
/// A row is read from both ends because the patch name may contain spaces.
/// Start date and time, stop date and time and rotation come from the left.
/// Az min, az max, el, pass and sub come from the right, and the patch name
/// is whatever lies between.
pub fn parse_schedule(text: &str) -> anyhow::Result<Schedule> {
    let mut site = None;
    let mut scans = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let content = line.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if site.is_none() {
            site = Some(parse_site_line(content).with_context(|| format!("line {number}"))?);
        } else {
            scans.push(parse_scan_line(line, number).with_context(|| format!("line {number}"))?);
        }
    }
    let site = site.ok_or_else(|| {
        anyhow!("no site line found; expected a line such as `Cerro-Chajnantor FYST -22.986 -67.740 5610.0` after the first header")
    })?;
    if scans.is_empty() {
        bail!("the schedule has a site line but no scan rows");
    }
    Ok(Schedule { site, scans })
}

fn parse_site_line(line: &str) -> anyhow::Result<Site> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.len() < 5 {
        bail!("invalid site line {line:?}: expected site name, telescope, latitude, longitude and elevation");
    }
    let n = tokens.len();
    let latitude_deg = parse_number(tokens[n - 3], "latitude")?;
    let longitude_deg = parse_number(tokens[n - 2], "longitude")?;
    let elevation_m = parse_number(tokens[n - 1], "elevation")?;
    if !(-90.0..=90.0).contains(&latitude_deg) {
        bail!("invalid latitude {latitude_deg}: it must be between -90 and 90 degrees");
    }
    Ok(Site {
        name: tokens[..n - 4].join(" "),
        telescope: tokens[n - 4].to_owned(),
        latitude_deg,
        longitude_deg,
        elevation_m,
    })
}

/// Splits a line on whitespace, keeping each token's byte range so the
/// patch name can be cut out with its inner spacing intact.
fn tokens_with_spans(line: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, line.len()));
    }
    spans
}

fn parse_scan_line(line: &str, number: usize) -> anyhow::Result<Scan> {
    let spans = tokens_with_spans(line);
    let token = |i: usize| &line[spans[i].0..spans[i].1];
    if spans.len() < 11 {
        bail!(
            "expected start date and time, stop date and time, rotation, patch name, az min, az max, el, pass and sub; found {} fields",
            spans.len()
        );
    }
    let n = spans.len();
    let start = parse_schedule_time(token(0), token(1), "start time")?;
    let stop = parse_schedule_time(token(2), token(3), "stop time")?;
    let rotation_deg = parse_number(token(4), "rotation")?;
    let patch = line[spans[4].1..spans[n - 5].0].trim().to_owned();
    let az_min_deg = parse_number(token(n - 5), "az min")?;
    let az_max_deg = parse_number(token(n - 4), "az max")?;
    let el_deg = parse_number(token(n - 3), "el")?;
    let pass = parse_index(token(n - 2), "pass")?;
    let sub = parse_index(token(n - 1), "sub")?;

    if stop <= start {
        bail!("the stop time {stop} is not after the start time {start}");
    }
    if !(0.0..=90.0).contains(&el_deg) {
        bail!("invalid el {el_deg}: it must be between 0 and 90 degrees");
    }
    Ok(Scan { line: number, start, stop, rotation_deg, patch, az_min_deg, az_max_deg, el_deg, pass, sub })
}

fn parse_schedule_time(date: &str, time: &str, what: &str) -> anyhow::Result<DateTime<Utc>> {
    let text = format!("{date} {time}");
    NaiveDateTime::parse_from_str(&text, SCHEDULE_TIME_FORMAT)
        .map(|t| t.and_utc())
        .map_err(|e| anyhow!("invalid {what} {text:?}: {e}; expected YYYY-MM-DD HH:MM:SS in UTC"))
}

fn parse_number(text: &str, what: &str) -> anyhow::Result<f64> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => bail!("invalid {what} {text:?}: expected a number"),
    }
}

fn parse_index(text: &str, what: &str) -> anyhow::Result<u32> {
    text.parse().map_err(|_| anyhow!("invalid {what} {text:?}: expected a whole number from 0"))
}

/// Formats one schedule row in the fixed-width layout that
/// `toast_ground_schedule` writes.
pub fn format_scan_row(scan: &Scan) -> String {
    format!(
        " {}  {} {:>8.2} {:<35} {:>8.2} {:>8.2} {:>8.2} {:>5} {:>3}",
        scan.start.format(SCHEDULE_TIME_FORMAT),
        scan.stop.format(SCHEDULE_TIME_FORMAT),
        scan.rotation_deg,
        scan.patch,
        scan.az_min_deg,
        scan.az_max_deg,
        scan.el_deg,
        scan.pass,
        scan.sub,
    )
}

// ---------------------------------------------------------------------------
// Source list

/// The scan types the `obs_unit.scan_type` column accepts.
pub const SCAN_TYPES: &[&str] = &["constant_el", "daisy", "pong"];

/// One row of a source list.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Line number in the file, starting at 1.
    pub line: u64,
    pub name: String,
    pub ra_deg: f64,
    pub dec_deg: f64,
    pub width_deg: f64,
    pub height_deg: f64,
    pub priority: f64,
    pub velocity_deg_s: f64,
    pub scan_type: String,
}

#[derive(Debug, Deserialize)]
struct SourceRecord {
    name: String,
    #[serde(rename = "RA")]
    ra: String,
    #[serde(rename = "DEC")]
    dec: String,
    width: f64,
    height: f64,
    priority: f64,
    velocity: f64,
    scan_type: String,
}

/// Parses a source list CSV with the header
/// `name,RA,DEC,width,height,priority,velocity,scan_type`. RA is
/// sexagesimal hours and DEC sexagesimal degrees; both become degrees.
/// Lines starting with `#` are comments.
pub fn parse_sources(text: &str) -> anyhow::Result<Vec<Source>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let mut sources = Vec::new();
    for result in reader.records() {
        let record = result?;
        let line = record.position().map_or(0, |p| p.line());
        let fields: SourceRecord = record.deserialize(Some(&headers)).map_err(|e| anyhow!("line {line}: {e}"))?;
        let source = source_from_record(fields).with_context(|| format!("line {line}"))?;
        sources.push(Source { line, ..source });
    }
    Ok(sources)
}

fn source_from_record(record: SourceRecord) -> anyhow::Result<Source> {
    if record.name.is_empty() {
        bail!("the name is empty");
    }
    let ra_hours = parse_sexagesimal(&record.ra).context("invalid RA")?;
    if !(0.0..24.0).contains(&ra_hours) {
        bail!("invalid RA {:?}: it must be from 00:00:00 to below 24:00:00 hours", record.ra);
    }
    let dec_deg = parse_sexagesimal(&record.dec).context("invalid DEC")?;
    if !(-90.0..=90.0).contains(&dec_deg) {
        bail!("invalid DEC {:?}: it must be between -90:00:00 and 90:00:00 degrees", record.dec);
    }
    for (what, value) in [("width", record.width), ("height", record.height), ("velocity", record.velocity)] {
        if !(value.is_finite() && value > 0.0) {
            bail!("invalid {what} {value}: it must be greater than 0");
        }
    }
    if !SCAN_TYPES.contains(&record.scan_type.as_str()) {
        bail!("invalid scan_type {:?}: expected one of {}", record.scan_type, SCAN_TYPES.join(", "));
    }
    Ok(Source {
        line: 0,
        name: record.name,
        ra_deg: ra_hours * 15.0,
        dec_deg,
        width_deg: record.width,
        height_deg: record.height,
        priority: record.priority,
        velocity_deg_s: record.velocity,
        scan_type: record.scan_type,
    })
}

/// Parses `[-]D:M[:S]` into `D + M/60 + S/3600` in the unit of `D`. The
/// sign applies to the whole value, so `-00:30:00` is -0.5.
pub fn parse_sexagesimal(text: &str) -> anyhow::Result<f64> {
    let trimmed = text.trim();
    let (negative, body) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let parts: Vec<&str> = body.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        bail!("{text:?} is not sexagesimal; expected D:M:S such as 15:28:00 or -34:00:00");
    }
    let mut value = 0.0;
    for (i, part) in parts.iter().enumerate() {
        let number: f64 = part
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| anyhow!("{text:?} is not sexagesimal: {part:?} is not a number"))?;
        if i > 0 && number >= 60.0 {
            bail!("{text:?} is not sexagesimal: minutes and seconds must be below 60");
        }
        value += number / 60f64.powi(i as i32);
    }
    Ok(if negative { -value } else { value })
}

// ---------------------------------------------------------------------------
// Instrument YAML

/// One band of the instrument: it becomes one instrument module.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Module name derived from the centre frequency, such as `f280`.
    pub name: String,
    pub center_frequency_ghz: f64,
    pub wavelength_um: f64,
    pub spatial_pixels: u32,
}

/// The keys of the sensitivity calculator's `input.yaml` that the demo
/// reads; the file has many more, which are ignored.
#[derive(Debug, Deserialize)]
struct InstrumentFile {
    /// Centre frequency of each band in Hz.
    #[serde(rename = "centerFrequency")]
    center_frequency_hz: Vec<f64>,
    /// Wavelength of each band in micrometres.
    wavelength: Vec<f64>,
    #[serde(rename = "spatialPixels")]
    spatial_pixels: Vec<u32>,
}

/// Parses the bands of an instrument from the keys `centerFrequency` (Hz),
/// `wavelength` (µm) and `spatialPixels`, three lists in the same order.
pub fn parse_instrument(text: &str) -> anyhow::Result<Vec<Band>> {
    let file: InstrumentFile = serde_yaml_ng::from_str(text)?;
    let count = file.center_frequency_hz.len();
    if count == 0 {
        bail!("centerFrequency is empty; list one frequency in Hz per band");
    }
    if file.wavelength.len() != count || file.spatial_pixels.len() != count {
        bail!(
            "centerFrequency has {count} entries, wavelength {} and spatialPixels {}; each needs one entry per band",
            file.wavelength.len(),
            file.spatial_pixels.len()
        );
    }
    let mut bands = Vec::with_capacity(count);
    let mut names = BTreeSet::new();
    for i in 0..count {
        let hz = file.center_frequency_hz[i];
        let wavelength_um = file.wavelength[i];
        if !(hz.is_finite() && hz > 0.0) {
            bail!("centerFrequency[{i}] = {hz} is invalid: it must be a positive frequency in Hz");
        }
        if !(wavelength_um.is_finite() && wavelength_um > 0.0) {
            bail!("wavelength[{i}] = {wavelength_um} is invalid: it must be positive, in µm");
        }
        if i32::try_from(file.spatial_pixels[i]).is_err() {
            bail!("spatialPixels[{i}] = {} is too large for the module table", file.spatial_pixels[i]);
        }
        let center_frequency_ghz = hz / 1e9;
        let name = format!("f{center_frequency_ghz:.0}");
        if !names.insert(name.clone()) {
            bail!("two bands have the centre frequency {center_frequency_ghz:.0} GHz; each band needs its own");
        }
        bands.push(Band { name, center_frequency_ghz, wavelength_um, spatial_pixels: file.spatial_pixels[i] });
    }
    Ok(bands)
}

// ---------------------------------------------------------------------------
// toast_ground_schedule arguments

/// The settings the demo reads from a `toast_ground_schedule` argument
/// list. Every field is optional because the tool has defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleParams {
    pub site_name: Option<String>,
    pub telescope: Option<String>,
    pub site_lat_deg: Option<f64>,
    pub site_lon_deg: Option<f64>,
    pub site_alt_m: Option<f64>,
    pub el_min_deg: Option<f64>,
    pub el_max_deg: Option<f64>,
    pub sun_avoidance_deg: Option<f64>,
    /// Maximum length of one constant-elevation scan in seconds.
    pub ces_max_time_s: Option<f64>,
    /// False when `--no-partial-scans` is given.
    pub partial_scans: bool,
}

/// Parses a YAML list of `toast_ground_schedule` command-line arguments,
/// such as `- --el-min-deg` followed by `- '40'`. Options the demo does not
/// use are skipped.
pub fn parse_params(text: &str) -> anyhow::Result<ScheduleParams> {
    let items: Vec<serde_yaml_ng::Value> =
        serde_yaml_ng::from_str(text).context("expected a YAML list of command-line arguments")?;
    let mut arguments = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text = match item {
            serde_yaml_ng::Value::String(s) => s.clone(),
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::Bool(b) => b.to_string(),
            other => bail!("item {i} is {other:?}; every item must be a single argument"),
        };
        arguments.push(text);
    }

    let mut params = ScheduleParams { partial_scans: true, ..ScheduleParams::default() };
    let mut i = 0;
    while i < arguments.len() {
        let argument = &arguments[i];
        i += 1;
        let Some(option) = argument.strip_prefix("--") else {
            bail!("unexpected argument {argument:?}: every value must follow an --option");
        };
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None if i < arguments.len() && !arguments[i].starts_with("--") => {
                i += 1;
                (option, Some(arguments[i - 1].clone()))
            }
            None => (option, None),
        };
        let number = |value: &Option<String>| -> anyhow::Result<f64> {
            let text = value.as_deref().ok_or_else(|| anyhow!("--{name} needs a value"))?;
            parse_number(text, &format!("value of --{name}"))
        };
        match name {
            "site-name" => params.site_name = value,
            "telescope" => params.telescope = value,
            "site-lat" => params.site_lat_deg = Some(number(&value)?),
            "site-lon" => params.site_lon_deg = Some(number(&value)?),
            "site-alt" => params.site_alt_m = Some(number(&value)?),
            "el-min-deg" => params.el_min_deg = Some(number(&value)?),
            "el-max-deg" => params.el_max_deg = Some(number(&value)?),
            "sun-avoidance-angle-deg" => params.sun_avoidance_deg = Some(number(&value)?),
            "ces-max-time-s" => params.ces_max_time_s = Some(number(&value)?),
            "no-partial-scans" => params.partial_scans = false,
            _ => {}
        }
    }
    if let (Some(min), Some(max)) = (params.el_min_deg, params.el_max_deg)
        && min > max
    {
        bail!("--el-min-deg {min} is above --el-max-deg {max}");
    }
    Ok(params)
}

impl ScheduleParams {
    /// Compares a schedule with these constraints and returns one sentence
    /// per scan or site value outside them.
    pub fn check(&self, schedule: &Schedule) -> Vec<String> {
        let mut findings = Vec::new();
        if let Some(name) = &self.site_name
            && name != &schedule.site.name
        {
            findings.push(format!("the schedule's site is {:?}, the parameters name {name:?}", schedule.site.name));
        }
        if let Some(telescope) = &self.telescope
            && telescope != &schedule.site.telescope
        {
            findings.push(format!(
                "the schedule's telescope is {:?}, the parameters name {telescope:?}",
                schedule.site.telescope
            ));
        }
        for scan in &schedule.scans {
            if let Some(min) = self.el_min_deg
                && scan.el_deg < min
            {
                findings.push(format!("line {}: el {} is below --el-min-deg {min}", scan.line, scan.el_deg));
            }
            if let Some(max) = self.el_max_deg
                && scan.el_deg > max
            {
                findings.push(format!("line {}: el {} is above --el-max-deg {max}", scan.line, scan.el_deg));
            }
            if let Some(max) = self.ces_max_time_s
                && scan.duration_s() as f64 > max
            {
                findings.push(format!(
                    "line {}: the subscan lasts {} s, longer than --ces-max-time-s {max}",
                    scan.line,
                    scan.duration_s()
                ));
            }
        }
        findings
    }
}

// ---------------------------------------------------------------------------
// Allowed scan_params keys

/// The keys allowed in `obs_unit.scan_params`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanParamKeys {
    keys: BTreeSet<String>,
}

#[derive(Debug, Deserialize)]
struct ScanParamKeysFile {
    forwarded_keys: Vec<String>,
}

/// Parses a JSON object whose `forwarded_keys` lists the allowed keys.
/// Other fields of the object are ignored.
pub fn parse_scan_param_keys(text: &str) -> anyhow::Result<ScanParamKeys> {
    let file: ScanParamKeysFile = serde_json::from_str(text)?;
    if file.forwarded_keys.is_empty() {
        bail!("forwarded_keys is empty; list at least one allowed scan_params key");
    }
    Ok(ScanParamKeys::new(file.forwarded_keys))
}

impl ScanParamKeys {
    pub fn new(keys: impl IntoIterator<Item = String>) -> ScanParamKeys {
        ScanParamKeys { keys: keys.into_iter().collect() }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Builds a `scan_params` object that contains only allowed keys.
#[derive(Debug)]
pub struct ScanParamsBuilder<'k> {
    allowed: &'k ScanParamKeys,
    params: Map<String, Json>,
}

impl<'k> ScanParamsBuilder<'k> {
    pub fn new(allowed: &'k ScanParamKeys) -> ScanParamsBuilder<'k> {
        ScanParamsBuilder { allowed, params: Map::new() }
    }

    /// Sets `key`, or returns an error naming it when the key is not in
    /// the allowed list. The telescope-control layer drops unknown keys
    /// without a message, so sending one would lose the value unnoticed.
    pub fn insert(&mut self, key: &str, value: impl Into<Json>) -> anyhow::Result<()> {
        if !self.allowed.contains(key) {
            bail!("scan_params key {key:?} is not in the allowed list ({} keys)", self.allowed.len());
        }
        self.params.insert(key.to_owned(), value.into());
        Ok(())
    }

    pub fn build(self) -> Map<String, Json> {
        self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: &str = "\
#Site           Telescope        Latitude [deg] Longitude [deg]   Elevation [m]
Test-Site TEL                    -20.000         -60.000          5000.0
#     Start time UTC        Stop time UTC Rotation Patch name     Az min   Az max       El  Pass Sub
 2030-01-01 10:00:00  2030-01-01 10:13:00     0.00 Saturn          41.73    52.25    40.05     0   0
 2030-01-01 10:13:00  2030-01-01 10:15:18    15.00 Deep  field 2   331.07   334.24    51.65     1   4
";

    #[test]
    fn schedule_site_line() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        assert_eq!(schedule.site.name, "Test-Site");
        assert_eq!(schedule.site.telescope, "TEL");
        assert_eq!(schedule.site.latitude_deg, -20.0);
        assert_eq!(schedule.site.longitude_deg, -60.0);
        assert_eq!(schedule.site.elevation_m, 5000.0);
    }

    #[test]
    fn schedule_rows() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        assert_eq!(schedule.scans.len(), 2);
        let first = &schedule.scans[0];
        assert_eq!(first.line, 4);
        assert_eq!(first.patch, "Saturn");
        assert_eq!(first.start.to_rfc3339(), "2030-01-01T10:00:00+00:00");
        assert_eq!(first.duration_s(), 780);
        assert_eq!(first.az_min_deg, 41.73);
        assert_eq!(first.az_max_deg, 52.25);
        assert_eq!(first.el_deg, 40.05);
        assert_eq!((first.pass, first.sub), (0, 0));
    }

    #[test]
    fn schedule_patch_name_with_spaces() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        let second = &schedule.scans[1];
        assert_eq!(second.patch, "Deep  field 2");
        assert_eq!(second.rotation_deg, 15.0);
        assert_eq!(second.duration_s(), 138);
        assert_eq!((second.pass, second.sub), (1, 4));
    }

    #[test]
    fn schedule_row_round_trips_through_format() {
        let schedule = parse_schedule(SCHEDULE).unwrap();
        let text = format!("# header\nSite TEL 0 0 0\n{}\n", format_scan_row(&schedule.scans[1]));
        let again = parse_schedule(&text).unwrap();
        assert_eq!(again.scans[0], Scan { line: 3, ..schedule.scans[1].clone() });
    }

    #[test]
    fn schedule_error_names_line() {
        let text =
            SCHEDULE.replace("2030-01-01 10:13:00  2030-01-01 10:15:18", "2030-01-01 10:13:00  2030-13-01 10:15:18");
        let error = format!("{:#}", parse_schedule(&text).unwrap_err());
        assert!(error.contains("line 5"), "{error}");
        assert!(error.contains("stop time"), "{error}");
    }

    #[test]
    fn schedule_short_row_rejected() {
        let text = "#h\nSite TEL 0 0 0\n 2030-01-01 10:00:00  2030-01-01 10:13:00 0.0 X 1 2 3\n";
        let error = format!("{:#}", parse_schedule(text).unwrap_err());
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("found 9 fields"), "{error}");
    }

    #[test]
    fn schedule_stop_before_start_rejected() {
        let text = "#h\nSite TEL 0 0 0\n 2030-01-01 10:00:00  2030-01-01 09:00:00 0.0 X 1 2 3 0 0\n";
        let error = format!("{:#}", parse_schedule(text).unwrap_err());
        assert!(error.contains("not after the start time"), "{error}");
    }

    #[test]
    fn schedule_without_rows_rejected() {
        let error = parse_schedule("#h\nSite TEL 0 0 0\n").unwrap_err();
        assert!(error.to_string().contains("no scan rows"), "{error}");
    }

    #[test]
    fn schedule_fractional_pass_rejected() {
        let text = "#h\nSite TEL 0 0 0\n 2030-01-01 10:00:00  2030-01-01 10:13:00 0.0 X 1 2 3 0.5 0\n";
        let error = format!("{:#}", parse_schedule(text).unwrap_err());
        assert!(error.contains("invalid pass"), "{error}");
    }

    const SOURCES: &str = "\
name,RA,DEC,width,height,priority,velocity,scan_type
Field_daisy,15:28:00,-34:30:00,4.0,4.0,1.0,0.4,daisy
Field_pong,00:00:36,+00:06:00,8.0,2.0,0.5,0.5,pong
";

    #[test]
    fn sources_parsed_to_degrees() {
        let sources = parse_sources(SOURCES).unwrap();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].name, "Field_daisy");
        assert!((sources[0].ra_deg - 232.0).abs() < 1e-9);
        assert!((sources[0].dec_deg + 34.5).abs() < 1e-9);
        assert!((sources[1].ra_deg - 0.15).abs() < 1e-9);
        assert!((sources[1].dec_deg - 0.1).abs() < 1e-9);
        assert_eq!(sources[1].scan_type, "pong");
        assert_eq!(sources[1].velocity_deg_s, 0.5);
    }

    #[test]
    fn sources_line_numbers_skip_comments() {
        let text = format!("# synthetic\n{SOURCES}");
        let sources = parse_sources(&text).unwrap();
        assert_eq!(sources[0].line, 3);
        assert_eq!(sources[1].line, 4);
    }

    #[test]
    fn sources_bad_scan_type_names_line() {
        let text = SOURCES.replace(",pong", ",raster");
        let error = format!("{:#}", parse_sources(&text).unwrap_err());
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("raster"), "{error}");
    }

    #[test]
    fn sources_ra_out_of_range_rejected() {
        let text = SOURCES.replace("15:28:00", "24:00:00");
        let error = format!("{:#}", parse_sources(&text).unwrap_err());
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("invalid RA"), "{error}");
    }

    #[test]
    fn sources_missing_column_rejected() {
        let error = parse_sources("name,RA,DEC\nX,1:00:00,2:00:00\n").unwrap_err();
        assert!(error.to_string().contains("width"), "{error}");
    }

    #[test]
    fn sexagesimal_negative_below_one() {
        assert!((parse_sexagesimal("-00:30:00").unwrap() + 0.5).abs() < 1e-12);
        assert!((parse_sexagesimal("12:30").unwrap() - 12.5).abs() < 1e-12);
    }

    #[test]
    fn sexagesimal_invalid_rejected() {
        assert!(parse_sexagesimal("12").is_err());
        assert!(parse_sexagesimal("12:60:00").is_err());
        assert!(parse_sexagesimal("12:x:00").is_err());
        assert!(parse_sexagesimal("1:2:3:4").is_err());
    }

    const INSTRUMENT: &str = "\
---
#Telescope
diameter: 5.7
t_lens_cold: [.98, .98]
spatialPixels: [20808, 7938]
eqtrans:
  [
    [.441, .253, .085],
    [.964, .946, .91],
  ]
centerFrequency: [8.5e+11, 2.22e+11]
wavelength: [353, 1350]
";

    #[test]
    fn instrument_bands() {
        let bands = parse_instrument(INSTRUMENT).unwrap();
        assert_eq!(bands.len(), 2);
        assert_eq!(bands[0].name, "f850");
        assert!((bands[0].center_frequency_ghz - 850.0).abs() < 1e-9);
        assert_eq!(bands[0].wavelength_um, 353.0);
        assert_eq!(bands[0].spatial_pixels, 20808);
        assert_eq!(bands[1].name, "f222");
        assert_eq!(bands[1].spatial_pixels, 7938);
    }

    #[test]
    fn instrument_length_mismatch_rejected() {
        let text = INSTRUMENT.replace("wavelength: [353, 1350]", "wavelength: [353]");
        let error = parse_instrument(&text).unwrap_err();
        assert!(error.to_string().contains("wavelength 1"), "{error}");
    }

    #[test]
    fn instrument_missing_key_rejected() {
        let text = INSTRUMENT.replace("spatialPixels", "pixels");
        let error = parse_instrument(&text).unwrap_err();
        assert!(error.to_string().contains("spatialPixels"), "{error}");
    }

    const PARAMS: &str = "\
- --site-lat
- '-22.9855235'
- --site-name
- Test-Site
- --telescope
- TEL
- --patch
- Mars,SSO,1,2
- --el-min-deg
- '40'
- --el-max-deg
- 65
- --sun-avoidance-angle-deg=35
- --ces-max-time-s
- '900'
- --no-partial-scans
- --out
- ./schedule.txt
";

    #[test]
    fn params_read() {
        let params = parse_params(PARAMS).unwrap();
        assert_eq!(params.site_name.as_deref(), Some("Test-Site"));
        assert_eq!(params.telescope.as_deref(), Some("TEL"));
        assert_eq!(params.site_lat_deg, Some(-22.9855235));
        assert_eq!(params.el_min_deg, Some(40.0));
        assert_eq!(params.el_max_deg, Some(65.0));
        assert_eq!(params.sun_avoidance_deg, Some(35.0));
        assert_eq!(params.ces_max_time_s, Some(900.0));
        assert!(!params.partial_scans);
    }

    #[test]
    fn params_partial_scans_default() {
        let params = parse_params("- --el-min-deg\n- '30'\n").unwrap();
        assert!(params.partial_scans);
        assert_eq!(params.ces_max_time_s, None);
    }

    #[test]
    fn params_bad_number_rejected() {
        let error = format!("{:#}", parse_params("- --el-min-deg\n- low\n").unwrap_err());
        assert!(error.contains("--el-min-deg"), "{error}");
    }

    #[test]
    fn params_not_a_list_rejected() {
        assert!(parse_params("site: x\n").is_err());
    }

    #[test]
    fn params_check_flags_long_and_low_scans() {
        let params = parse_params(PARAMS).unwrap();
        let schedule = parse_schedule(SCHEDULE).unwrap();
        let findings = params.check(&schedule);
        assert!(findings.is_empty(), "{findings:?}");

        let strict = ScheduleParams { el_min_deg: Some(45.0), ces_max_time_s: Some(600.0), ..params };
        let findings = strict.check(&schedule);
        assert!(findings.iter().any(|f| f.contains("line 4") && f.contains("below")), "{findings:?}");
        assert!(findings.iter().any(|f| f.contains("lasts 780 s")), "{findings:?}");
        assert_eq!(findings.len(), 2, "{findings:?}");
    }

    const KEYS: &str = r#"{"description": "test", "forwarded_keys": ["body", "el_bore", "ra"]}"#;

    #[test]
    fn scan_params_allowed_keys() {
        let keys = parse_scan_param_keys(KEYS).unwrap();
        let mut builder = ScanParamsBuilder::new(&keys);
        builder.insert("body", "saturn").unwrap();
        builder.insert("el_bore", 40.05).unwrap();
        let params = builder.build();
        assert_eq!(params.len(), 2);
        assert_eq!(params["body"], "saturn");
    }

    #[test]
    fn scan_params_unknown_key_rejected() {
        let keys = parse_scan_param_keys(KEYS).unwrap();
        let mut builder = ScanParamsBuilder::new(&keys);
        let error = builder.insert("speed", 1.0).unwrap_err();
        assert!(error.to_string().contains("\"speed\""), "{error}");
        assert!(builder.build().is_empty());
    }

    #[test]
    fn scan_param_keys_need_list() {
        assert!(parse_scan_param_keys(r#"{"keys": ["a"]}"#).is_err());
        assert!(parse_scan_param_keys(r#"{"forwarded_keys": []}"#).is_err());
    }
}
