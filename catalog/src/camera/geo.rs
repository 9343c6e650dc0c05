//! Coordinates for web maps.

/// WGS-84 → GCJ-02 (the offset coordinate system Chinese web maps expect). Points outside
/// China are returned unchanged, as the maps themselves do.
pub fn wgs84_to_gcj02(longitude: f64, latitude: f64) -> (f64, f64) {
    if !(72.004..=137.8347).contains(&longitude) || !(0.8293..=55.8271).contains(&latitude) {
        return (longitude, latitude);
    }
    // The published transform: Krasovsky 1940 ellipsoid plus a deterministic offset field.
    const A: f64 = 6_378_245.0;
    const EE: f64 = 0.006_693_421_622_965_943;
    let pi = std::f64::consts::PI;
    let x = longitude - 105.0;
    let y = latitude - 35.0;
    let mut d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    d_lat += (20.0 * (6.0 * x * pi).sin() + 20.0 * (2.0 * x * pi).sin()) * 2.0 / 3.0;
    d_lat += (20.0 * (y * pi).sin() + 40.0 * (y / 3.0 * pi).sin()) * 2.0 / 3.0;
    d_lat += (160.0 * (y / 12.0 * pi).sin() + 320.0 * (y * pi / 30.0).sin()) * 2.0 / 3.0;
    let mut d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    d_lon += (20.0 * (6.0 * x * pi).sin() + 20.0 * (2.0 * x * pi).sin()) * 2.0 / 3.0;
    d_lon += (20.0 * (x * pi).sin() + 40.0 * (x / 3.0 * pi).sin()) * 2.0 / 3.0;
    d_lon += (150.0 * (x / 12.0 * pi).sin() + 300.0 * (x / 30.0 * pi).sin()) * 2.0 / 3.0;
    let rad_lat = latitude / 180.0 * pi;
    let magic = 1.0 - EE * rad_lat.sin() * rad_lat.sin();
    let sqrt_magic = magic.sqrt();
    d_lat = (d_lat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrt_magic) * pi);
    d_lon = (d_lon * 180.0) / (A / sqrt_magic * rad_lat.cos() * pi);
    (longitude + d_lon, latitude + d_lat)
}
