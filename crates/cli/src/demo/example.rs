//! `opsbuffer demo --write-example DIR`: a small synthetic input set in the
//! formats of the real one, for machines that do not have the real files.
//! Every value is made up. Each file is marked as synthetic in a comment
//! where its format allows one, and the JSON file in its `description` field.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

use super::input::{Scan, format_scan_row};

/// File names of the example set, in the order of the demo's options
/// `--schedule`, `--sources`, `--instrument`, `--params` and `--scan-params`.
pub const FILE_NAMES: [&str; 5] =
    ["schedule.txt", "sourcelist.csv", "instrument.yaml", "params.yaml", "scan_params_keys.json"];

const MARKER: &str =
    "SYNTHETIC example data written by `opsbuffer demo --write-example`; not an observing plan or a real instrument";

/// Speed of light in m/s, for the wavelengths of the example bands.
const SPEED_OF_LIGHT_M_S: f64 = 299_792_458.0;

/// Writes the example set into `dir`, creating it, and returns the paths.
pub fn write(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let contents = [schedule(), source_list(), instrument(), params(), scan_param_keys()];
    let mut paths = Vec::with_capacity(FILE_NAMES.len());
    for (name, content) in FILE_NAMES.iter().zip(contents) {
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

fn at(start: DateTime<Utc>, offset_s: i64) -> DateTime<Utc> {
    start + Duration::seconds(offset_s)
}

/// Six subscans over two passes of a made-up patch whose name contains a
/// space. The last subscan of pass 1 is cut short, like a scan that ends
/// when the next pass begins.
fn schedule() -> String {
    let night = Utc.with_ymd_and_hms(2030, 1, 15, 2, 0, 0).single().expect("a valid date");
    // (offset from the start of the night in s, duration in s, az min, az max, el, pass, sub)
    let rows: [(i64, i64, f64, f64, f64, u32, u32); 6] = [
        (0, 720, 120.00, 131.50, 45.00, 0, 0),
        (720, 720, 118.25, 130.75, 45.00, 0, 1),
        (1440, 720, 116.00, 129.00, 45.00, 0, 2),
        (3600, 900, 210.50, 224.00, 55.00, 1, 0),
        (4500, 900, 214.00, 228.25, 55.00, 1, 1),
        (5400, 150, 219.75, 222.50, 55.00, 1, 2),
    ];
    let mut text = format!(
        "# {MARKER}.\n\
         #Site           Telescope        Latitude [deg] Longitude [deg]   Elevation [m]\n\
         Example-Site     EXAMPLE-TEL              -23.000         -67.800          5600.0\n\
         #     Start time UTC        Stop time UTC Rotation Patch name                            Az min   Az max       El  Pass Sub\n"
    );
    for (offset, duration, az_min, az_max, el, pass, sub) in rows {
        let scan = Scan {
            line: 0,
            start: at(night, offset),
            stop: at(night, offset + duration),
            rotation_deg: 0.0,
            patch: "Example field".to_owned(),
            az_min_deg: az_min,
            az_max_deg: az_max,
            el_deg: el,
            pass,
            sub,
        };
        text.push_str(&format_scan_row(&scan));
        text.push('\n');
    }
    text
}

fn source_list() -> String {
    format!(
        "# {MARKER}.\n\
         name,RA,DEC,width,height,priority,velocity,scan_type\n\
         Example_daisy,10:00:00,-20:00:00,2.0,2.0,1.0,0.3,daisy\n\
         Example_pong,11:30:00,-45:30:00,6.0,4.0,0.5,0.6,pong\n"
    )
}

fn instrument() -> String {
    let frequencies_hz = [2.8e11, 3.5e11, 8.5e11];
    let wavelengths_um: Vec<String> =
        frequencies_hz.iter().map(|hz| format!("{:.0}", SPEED_OF_LIGHT_M_S / hz * 1e6)).collect();
    format!(
        "# {MARKER}.\n\
         # Three bands; the pixel counts are invented.\n\
         centerFrequency: [2.8e+11, 3.5e+11, 8.5e+11]\n\
         wavelength: [{}]\n\
         spatialPixels: [1200, 1200, 2400]\n",
        wavelengths_um.join(", ")
    )
}

fn params() -> String {
    format!(
        "# {MARKER}.\n\
         - --site-name\n\
         - Example-Site\n\
         - --telescope\n\
         - EXAMPLE-TEL\n\
         - --site-lat\n\
         - '-23.0'\n\
         - --site-lon\n\
         - '-67.8'\n\
         - --site-alt\n\
         - '5600'\n\
         - --el-min-deg\n\
         - '30'\n\
         - --el-max-deg\n\
         - '70'\n\
         - --sun-avoidance-angle-deg\n\
         - '45'\n\
         - --ces-max-time-s\n\
         - '1200'\n"
    )
}

/// Builds a key list of the keys the demo writes, so the example exercises
/// the same builder as a real key list.
fn scan_param_keys() -> String {
    let document = json!({
        "description": format!("{MARKER}. The keys are the ones the demo writes."),
        "forwarded_keys": ["allow_partial", "body", "boresight_rot", "dec", "el_bore", "ra", "v_az"],
    });
    let mut text = serde_json::to_string_pretty(&document).expect("JSON serialization");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::super::input;
    use super::*;

    #[test]
    fn example_schedule_parses() {
        let schedule = input::parse_schedule(&schedule()).unwrap();
        assert_eq!(schedule.site.name, "Example-Site");
        assert_eq!(schedule.scans.len(), 6);
        assert_eq!(schedule.scans[0].patch, "Example field");
        assert_eq!(schedule.scans[5].duration_s(), 150);
        assert_eq!(schedule.scans[5].pass, 1);
    }

    #[test]
    fn example_files_parse() {
        assert_eq!(input::parse_sources(&source_list()).unwrap().len(), 2);
        let bands = input::parse_instrument(&instrument()).unwrap();
        assert_eq!(bands.len(), 3);
        assert_eq!(bands[0].wavelength_um, 1071.0);
        let params = input::parse_params(&params()).unwrap();
        assert_eq!(params.ces_max_time_s, Some(1200.0));
        let keys = input::parse_scan_param_keys(&scan_param_keys()).unwrap();
        assert!(keys.contains("el_bore"));
    }

    #[test]
    fn example_schedule_meets_params() {
        let schedule = input::parse_schedule(&schedule()).unwrap();
        let params = input::parse_params(&params()).unwrap();
        assert_eq!(params.check(&schedule), Vec::<String>::new());
    }

    #[test]
    fn example_written_to_directory() {
        let dir = std::env::temp_dir().join(format!("opsbuffer-example-{}", std::process::id()));
        let paths = write(&dir).unwrap();
        assert_eq!(paths.len(), 5);
        for path in &paths {
            assert!(path.is_file(), "{}", path.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
