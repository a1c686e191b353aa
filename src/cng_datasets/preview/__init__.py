"""The map preview: ``<dataset>/index.html`` and ``cng-datasets preview``.

The page is one static file (MapLibre GL JS and the PMTiles protocol inlined, see VENDORED.md) that
draws ``../<name>.pmtiles`` over a plain background, shows a clicked feature's attributes, and
the dataset card's facts beside the map. It works from a bucket (the archive must answer Range
requests and, from another origin, CORS) and from :func:`serve`, which serves a local or S3
destination over HTTP with Range requests (PMTiles needs them; Python's ``http.server`` has none).

Test hook (the browser test drives it): ``index.html?click=<lon>,<lat>`` clicks there once the map
is idle; ``?empty`` draws the background only; the page's title becomes ``ready`` when done.
"""

from __future__ import annotations

import html
import json
from importlib import resources

PAGE_FILE = "index.html"


def _vendored(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def page(name: str, layer: str, bounds: list[float] | None, facts: list[tuple[str, str]]) -> str:
    """The preview page of the dataset ``name`` whose tiles are ``../<name>.pmtiles``, layer ``layer``."""
    box = bounds or [-180.0, -85.0, 180.0, 85.0]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    config = json.dumps({"archive": f"../{name}.pmtiles", "layer": layer, "bounds": box})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(name)}</title>
<style>{_vendored("maplibre-gl.css")}
html,body{{margin:0;height:100%;font:13px sans-serif}}#map{{position:absolute;inset:0 320px 0 0}}
#side{{position:absolute;top:0;right:0;bottom:0;width:300px;padding:10px;overflow:auto;background:#f7f7f7}}
th{{text-align:left;padding-right:6px}}#info{{white-space:pre-wrap;word-break:break-word}}</style>
<script>{_vendored("maplibre-gl.js")}</script>
<script>{_vendored("pmtiles.js")}</script>
</head><body><div id="map"></div>
<div id="side"><h2>{html.escape(name)}</h2><table>{rows}</table>
<h3>Feature</h3><div id="info">click a feature</div></div>
<script>
const CFG = {config};
const params = new URLSearchParams(location.search);
const protocol = new pmtiles.Protocol();
maplibregl.addProtocol("pmtiles", protocol.tile);
const archive = new URL(CFG.archive, location.href).href;
const map = new maplibregl.Map({{
  container: "map", attributionControl: false, canvasContextAttributes: {{preserveDrawingBuffer: true}},
  style: {{version: 8, sources: {{}},
    layers: [{{id: "bg", type: "background", paint: {{"background-color": "#ffffff"}}}}]}},
  bounds: [[CFG.bounds[0], CFG.bounds[1]], [CFG.bounds[2], CFG.bounds[3]]], fitBoundsOptions: {{padding: 10}},
}});
const kinds = (...t) => ["match", ["geometry-type"], t, true, false];
function show(features) {{
  document.getElementById("info").textContent = features.length
    ? JSON.stringify(features[0].properties, null, 1) : "no feature here";
}}
map.on("load", () => {{
  if (!params.has("empty")) {{
    map.addSource("data", {{type: "vector", url: "pmtiles://" + archive}});
    const s = {{source: "data", "source-layer": CFG.layer}};
    map.addLayer({{id: "fill", type: "fill", ...s, filter: kinds("Polygon", "MultiPolygon"),
      paint: {{"fill-color": "#d62728", "fill-opacity": 0.6, "fill-outline-color": "#7f0000"}}}});
    map.addLayer({{id: "line", type: "line", ...s, filter: kinds("LineString", "MultiLineString"),
      paint: {{"line-color": "#1f77b4", "line-width": 1.5}}}});
    map.addLayer({{id: "point", type: "circle", ...s, filter: kinds("Point", "MultiPoint"),
      paint: {{"circle-color": "#2ca02c", "circle-radius": 3}}}});
  }}
  map.once("idle", () => {{
    const at = params.get("click");
    if (at) {{
      const [lon, lat] = at.split(",").map(Number);
      show(map.queryRenderedFeatures(map.project([lon, lat])));
    }}
    document.title = "ready";
  }});
}});
map.on("click", (e) => show(map.queryRenderedFeatures(e.point)));
map.on("error", (e) => {{ document.getElementById("info").textContent = "error: " + (e.error && e.error.message); }});
window.addEventListener("error", (e) => {{ document.getElementById("info").textContent = "error: " + e.message; }});
</script></body></html>
"""
