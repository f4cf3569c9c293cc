// CityGW city page: draws the city as SVG from the API's own JSON, every few seconds. No other origin.
// Public: vehicles (GTFS-realtime JSON), the static GTFS's routes and stops, air quality, open data.
// A key typed in (kept in sessionStorage for this tab) goes in the Authorization header: a utility's or
// an engineer's key reads telemetry (meters), an engineer's also agents, device health and lamp commands.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const GTFS_RETRY_MS = 300000;
  const KEY_STORAGE = "citygw.key";
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 1000;
  const HEIGHT = 700;
  const PAD = 40;
  const OCCUPANCY = {
    EMPTY: "empty",
    MANY_SEATS_AVAILABLE: "many seats free",
    FEW_SEATS_AVAILABLE: "few seats free",
    STANDING_ROOM_ONLY: "standing room only",
    CRUSHED_STANDING_ROOM_ONLY: "crowded",
    FULL: "full",
    NOT_ACCEPTING_PASSENGERS: "not taking passengers",
  };
  const METER_MEASUREMENTS = new Set(["electricity", "water", "water_quality", "heat"]);
  const OPEN_DATASETS = ["air-quality", "streetlights", "water-consumption", "electricity"];

  const $ = (id) => document.getElementById(id);
  const state = { gtfs: null, gtfsTriedAt: -Infinity, gtfsProblem: "", commandTimer: null, timer: null, busy: false, again: false };

  // ---- talking to the API -------------------------------------------------------------------------

  function key() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  async function api(path, options) {
    const init = Object.assign({ headers: {} }, options || {});
    init.headers = Object.assign({ Accept: "application/json" }, init.headers);
    if (key()) init.headers.Authorization = "Bearer " + key();
    const response = await fetch(path, init);
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) body = await response.json();
    else if (type.startsWith("text/")) body = await response.text();
    else body = await response.arrayBuffer();
    return { status: response.status, ok: response.ok, body: body };
  }

  function detail(answer) {
    const body = answer.body;
    if (body && typeof body === "object" && "detail" in body) {
      const d = body.detail;
      if (typeof d === "string") return d;
      if (d && Array.isArray(d.problems)) return d.problems.join("; ");
      return JSON.stringify(d);
    }
    return "HTTP " + answer.status;
  }

  // ---- the static GTFS: a zip read in the browser (stored or deflated members) ----------------------

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async function unzip(buffer, wanted) {
    const view = new DataView(buffer);
    let end = -1;
    for (let i = buffer.byteLength - 22; i >= Math.max(0, buffer.byteLength - 65557); i--) {
      if (view.getUint32(i, true) === 0x06054b50) { end = i; break; }
    }
    if (end < 0) throw new Error("not a zip file");
    const count = view.getUint16(end + 10, true);
    let at = view.getUint32(end + 16, true);
    const decoder = new TextDecoder("utf-8");
    const found = {};
    for (let n = 0; n < count; n++) {
      if (view.getUint32(at, true) !== 0x02014b50) throw new Error("damaged zip directory");
      const method = view.getUint16(at + 10, true);
      const size = view.getUint32(at + 20, true);
      const nameLength = view.getUint16(at + 28, true);
      const extraLength = view.getUint16(at + 30, true);
      const commentLength = view.getUint16(at + 32, true);
      const local = view.getUint32(at + 42, true);
      const name = decoder.decode(new Uint8Array(buffer, at + 46, nameLength));
      if (wanted.includes(name)) {
        const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
        const raw = new Uint8Array(buffer, start, size);
        if (method !== 0 && method !== 8) throw new Error(name + ": compression method " + method);
        found[name] = decoder.decode(method === 0 ? raw : await inflate(raw));
      }
      at += 46 + nameLength + extraLength + commentLength;
    }
    return found;
  }

  // RFC 4180 CSV with a header row: a list of objects by column name.
  function csv(text) {
    const rows = [];
    let row = [];
    let field = "";
    let quoted = false;
    text = text.replace(/^\uFEFF/, "");
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
        else if (c === '"') quoted = false;
        else field += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") { row.push(field); field = ""; }
      else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        row.push(field); field = "";
        if (row.length > 1 || row[0] !== "") rows.push(row);
        row = [];
      } else field += c;
    }
    if (field !== "" || row.length) { row.push(field); rows.push(row); }
    const header = (rows.shift() || []).map((h) => h.trim());
    return rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i] === undefined ? "" : r[i]])));
  }

  async function loadGtfs() {
    if (state.gtfs || performance.now() - state.gtfsTriedAt < GTFS_RETRY_MS) return;
    state.gtfsTriedAt = performance.now();
    const answer = await api("/v1/transit/gtfs.zip", { headers: { Accept: "application/zip" } });
    if (!answer.ok) return; // 404: no static GTFS loaded; vehicles still show, without stop names
    const files = await unzip(answer.body, ["stops.txt", "routes.txt", "trips.txt", "shapes.txt"]);
    const stops = {};
    for (const s of csv(files["stops.txt"] || "")) {
      stops[s.stop_id] = { id: s.stop_id, name: s.stop_name, lat: +s.stop_lat, lon: +s.stop_lon };
    }
    const routes = {};
    for (const r of csv(files["routes.txt"] || "")) {
      routes[r.route_id] = {
        id: r.route_id,
        name: r.route_short_name || r.route_long_name || r.route_id,
        type: +r.route_type,
        color: /^[0-9A-Fa-f]{6}$/.test(r.route_color || "") ? "#" + r.route_color : null,
      };
    }
    const shapeRoute = {};
    for (const t of csv(files["trips.txt"] || "")) if (t.shape_id) shapeRoute[t.shape_id] = t.route_id;
    const shapes = {};
    for (const p of csv(files["shapes.txt"] || "")) {
      (shapes[p.shape_id] = shapes[p.shape_id] || []).push([+p.shape_pt_sequence, +p.shape_pt_lat, +p.shape_pt_lon]);
    }
    for (const id in shapes) shapes[id].sort((a, b) => a[0] - b[0]);
    state.gtfs = { stops, routes, shapes, shapeRoute };
  }

  // ---- reading what the API says into one picture of the city ------------------------------------

  function deviceOfUrn(urn) {
    // urn:ngsi-ld:Device:<city>:<device, percent-encoded>
    const parts = String(urn || "").split(":");
    return parts.length >= 5 ? decodeURIComponent(parts.slice(4).join(":")) : null;
  }

  function value(prop) {
    return prop && typeof prop === "object" && "value" in prop ? prop.value : undefined;
  }

  async function collect() {
    const get = (path) => api(path).catch((error) => ({ status: 0, ok: false, body: String(error) }));
    const [vehicles, trips, air, city, summary, agents, ...open] = await Promise.all([
      get("/v1/transit/vehicle-positions.json"),
      get("/v1/transit/trip-updates.json"),
      get("/v1/air-quality/stations"),
      get("/v1/air-quality/city"),
      get("/v1/summary?limit=1000"),
      key() ? get("/v1/agents?limit=1000") : Promise.resolve({ status: 401, ok: false, body: null }),
      ...OPEN_DATASETS.map((name) => get("/v1/open-data/" + name + "?limit=1000")),
    ]);
    const positions = {}; // device id -> [lat, lon]
    const lamps = {}; // cabinet id -> {on, dimmed, off, fault}
    const meters = {}; // meter id -> {measurement, values, age_s, agent}
    open.forEach((answer, i) => {
      if (!answer.ok || !Array.isArray(answer.body)) return;
      for (const entity of answer.body) {
        const device = deviceOfUrn(entity.refDevice && entity.refDevice.object);
        if (!device) continue;
        const point = entity.location && entity.location.value && entity.location.value.coordinates;
        if (point) positions[device] = [point[1], point[0]];
        if (OPEN_DATASETS[i] === "streetlights") {
          const counts = (lamps[device] = lamps[device] || { on: 0, dimmed: 0, off: 0, fault: 0 });
          const condition = value(entity.status);
          const power = value(entity.powerState);
          if (condition && condition !== "ok") counts.fault++;
          else if (power === "off") counts.off++;
          else if (power === "low") counts.dimmed++;
          else counts.on++;
        } else if (OPEN_DATASETS[i] !== "air-quality") {
          const values = {};
          for (const name in entity) {
            const v = value(entity[name]);
            if (typeof v === "number") values[name] = v;
          }
          meters[device] = { measurement: OPEN_DATASETS[i], values, age_s: null, agent: null };
        }
      }
    });
    const cabinetAgents = {};
    if (summary.ok) {
      for (const d of summary.body.devices) {
        const v = d.values;
        if (typeof v.lat === "number" && typeof v.lon === "number" && !(d.device in positions)) {
          positions[d.device] = [v.lat, v.lon];
        }
        if (METER_MEASUREMENTS.has(d.measurement)) {
          meters[d.device] = { measurement: d.measurement, values: v, age_s: d.age_s, agent: d.agent };
        }
        if (d.measurement === "lighting" && d.agent) {
          cabinetAgents[d.device] = d.agent;
          if (!(d.device in lamps)) lamps[d.device] = lampCounts(v);
        }
      }
    }
    if (agents.ok) {
      for (const a of agents.body) {
        if (!a.location) continue;
        for (const device in a.device_health) {
          if (!(device in positions)) positions[device] = [a.location.lat, a.location.lon];
        }
      }
    }
    return { vehicles, trips, air, city, summary, agents, positions, lamps, meters, cabinetAgents };
  }

  // A cabinet's lamps from its raw reading (lampN_level 0-254, lampN_status DALI bits), as open data does.
  function lampCounts(values) {
    const counts = { on: 0, dimmed: 0, off: 0, fault: 0 };
    const lamps = {};
    for (const name in values) {
      const m = /^(lamp\d+)_(status|level)$/.exec(name);
      if (m) (lamps[m[1]] = lamps[m[1]] || {})[m[2]] = values[name];
    }
    for (const id in lamps) {
      const l = lamps[id];
      if (typeof l.status === "number" && l.status & 0x03) counts.fault++;
      else if (typeof l.status === "number" && !(l.status & 0x04)) counts.off++;
      else if (typeof l.level === "number" && l.level <= 0) counts.off++;
      else if (typeof l.level === "number" && l.level < 254) counts.dimmed++;
      else counts.on++;
    }
    return counts;
  }

  function cabinetState(c) {
    if (c.fault) return "fault";
    if (c.dimmed) return "dimmed";
    if (c.on) return "on";
    return "off";
  }

  function vehicleRows(picture) {
    const byVehicle = {};
    if (picture.trips.ok) {
      for (const e of picture.trips.body.entity || []) {
        const u = e.trip_update;
        if (!u) continue;
        const id = (u.vehicle && u.vehicle.id) || e.id;
        const next = (u.stop_time_update || [])[0];
        const delay = typeof u.delay === "number" ? u.delay
          : next && next.arrival && typeof next.arrival.delay === "number" ? next.arrival.delay : null;
        const arrival = next && next.arrival && next.arrival.time ? Number(next.arrival.time) : null;
        // A bus's runs come in driving order (its next run of its block last): the first is the one it is on.
        if (!(id in byVehicle)) byVehicle[id] = { nextStop: next && next.stop_id, arrival, delay };
      }
    }
    const rows = [];
    if (!picture.vehicles.ok) return rows;
    const now = Number((picture.vehicles.body.header || {}).timestamp) || Date.now() / 1000;
    for (const e of picture.vehicles.body.entity || []) {
      const v = e.vehicle;
      if (!v || !v.position) continue;
      const id = (v.vehicle && v.vehicle.id) || e.id;
      const trip = v.trip || {};
      const update = byVehicle[id] || {};
      rows.push({
        id,
        label: (v.vehicle && v.vehicle.label) || id,
        route: trip.route_id || null,
        trip: trip.trip_id || null,
        lat: v.position.latitude,
        lon: v.position.longitude,
        bearing: v.position.bearing,
        nextStop: update.nextStop || v.stop_id || null,
        inMinutes: update.arrival ? Math.max(0, Math.round((update.arrival - now) / 60)) : null,
        delay: update.delay === undefined ? null : update.delay,
        occupancy: v.occupancy_status || null,
        percentage: v.occupancy_percentage,
      });
    }
    return rows.sort((a, b) => (a.route || "").localeCompare(b.route || "") || a.id.localeCompare(b.id));
  }

  // ---- drawing --------------------------------------------------------------------------------------

  function el(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const k in attributes || {}) if (attributes[k] !== null && attributes[k] !== undefined) node.setAttribute(k, attributes[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cell(row, text, attributes) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    for (const k in attributes || {}) td.setAttribute(k, attributes[k]);
    row.appendChild(td);
    return td;
  }

  function fill(tableId, rows, make) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement("tr");
      make(tr, r);
      body.appendChild(tr);
    }
  }

  function projection(points) {
    if (!points.length) return null;
    let [s, w, n, e] = [90, 180, -90, -180];
    for (const [lat, lon] of points) {
      s = Math.min(s, lat); n = Math.max(n, lat); w = Math.min(w, lon); e = Math.max(e, lon);
    }
    const k = Math.cos((((s + n) / 2) * Math.PI) / 180);
    const spanX = Math.max((e - w) * k, 0.002);
    const spanY = Math.max(n - s, 0.002);
    const scale = Math.min((WIDTH - 2 * PAD) / spanX, (HEIGHT - 2 * PAD) / spanY);
    const x0 = WIDTH / 2 - (((w + e) / 2 - w) * k * scale);
    const y0 = HEIGHT / 2 + (((s + n) / 2 - s) * scale);
    return (lat, lon) => [(x0 + (lon - w) * k * scale).toFixed(1), (y0 - (lat - s) * scale).toFixed(1)];
  }

  function select(text) {
    $("selected").textContent = text;
  }

  function marker(layer, kind, attributes, title, shape) {
    const g = el("g", Object.assign({ class: kind, "data-kind": kind, tabindex: "0" }, attributes));
    g.appendChild(shape);
    g.appendChild(el("title", {}, title));
    g.addEventListener("click", () => select(title));
    g.addEventListener("keydown", (event) => { if (event.key === "Enter") select(title); });
    layer.appendChild(g);
    return g;
  }

  function draw(picture, vehicles, stations) {
    const gtfs = state.gtfs;
    const points = [];
    for (const v of vehicles) points.push([v.lat, v.lon]);
    for (const d in picture.positions) points.push(picture.positions[d]);
    if (gtfs) for (const id in gtfs.stops) points.push([gtfs.stops[id].lat, gtfs.stops[id].lon]);
    const at = projection(points);
    const layers = ["shapes", "stops", "agents", "devices", "vehicles"].map((n) => $("layer-" + n));
    layers.forEach((layer) => layer.replaceChildren());
    $("map-empty").hidden = at !== null;
    if (!at) return;
    const [shapes, stops, agentLayer, devices, vehicleLayer] = layers;
    if (gtfs) {
      for (const id in gtfs.shapes) {
        const route = gtfs.routes[gtfs.shapeRoute[id]] || {};
        const path = gtfs.shapes[id].map(([, lat, lon]) => at(lat, lon).join(",")).join(" ");
        const line = el("polyline", {
          points: path, class: "shape" + (route.type === 0 ? " tram" : ""),
          "data-kind": "shape", "data-shape": id, "data-route": route.id,
        });
        if (route.color) line.style.setProperty("--route", route.color);
        shapes.appendChild(line);
      }
      for (const id in gtfs.stops) {
        const s = gtfs.stops[id];
        const [x, y] = at(s.lat, s.lon);
        const c = el("circle", { cx: x, cy: y, r: 3, class: "stop", "data-kind": "stop", "data-stop": id });
        c.appendChild(el("title", {}, s.name));
        stops.appendChild(c);
      }
    }
    if (picture.agents.ok) {
      for (const a of picture.agents.body) {
        if (!a.location) continue;
        const [x, y] = at(a.location.lat, a.location.lon);
        marker(agentLayer, "agent", { "data-agent": a.id, "data-state": a.state, transform: `translate(${x},${y})` },
          `agent ${a.id} (${a.site || "no site"}): ${a.state}`, el("rect", { x: -9, y: -9, width: 18, height: 18, rx: 4 }));
      }
    }
    for (const s of stations) {
      const p = picture.positions[s.device];
      if (!p) continue;
      const [x, y] = at(p[0], p[1]);
      const band = s.index ? s.index.band : null;
      const text = s.index ? `${s.index.level} (${s.index.pollutant})` : s.stale ? "no current reading" : "no index";
      marker(devices, "aq-station", {
        "data-device": s.device, "data-band": band, "data-level": s.index ? s.index.level : null,
        class: "aq-station " + (band ? "band-" + band : "band-none"), transform: `translate(${x},${y})`,
      }, `air quality ${s.device}: ${text}`, el("circle", { r: 10 }));
    }
    for (const cabinet in picture.lamps) {
      const p = picture.positions[cabinet];
      if (!p) continue;
      const [x, y] = at(p[0], p[1]);
      const counts = picture.lamps[cabinet];
      const st = cabinetState(counts);
      marker(devices, "lamp-cabinet", {
        "data-device": cabinet, "data-state": st, class: "lamp-cabinet state-" + st, transform: `translate(${x},${y})`,
      }, `lamp cabinet ${cabinet}: ${lampText(counts)}`, el("rect", { x: -7, y: -7, width: 14, height: 14 }));
    }
    for (const meter in picture.meters) {
      const p = picture.positions[meter];
      if (!p) continue;
      const [x, y] = at(p[0], p[1]);
      marker(devices, "meter", { "data-device": meter, transform: `translate(${x},${y})` },
        `meter ${meter}: ${valuesText(picture.meters[meter].values)}`, el("path", { d: "M0,-9 L9,0 L0,9 L-9,0 Z" }));
    }
    for (const v of vehicles) {
      const [x, y] = at(v.lat, v.lon);
      const route = gtfs && v.route ? gtfs.routes[v.route] : null;
      const g = marker(vehicleLayer, "vehicle", {
        "data-vehicle": v.id, "data-route": v.route, "data-delay": v.delay, "data-occupancy": v.occupancy,
        class: "vehicle" + (route && route.type === 0 ? " tram" : ""), transform: `translate(${x},${y})`,
      }, vehicleText(v), el("circle", { r: 9 }));
      if (route && route.color) g.style.setProperty("--route", route.color);
      if (typeof v.bearing === "number") {
        g.appendChild(el("path", { d: "M0,-16 L5,-8 L-5,-8 Z", class: "heading", transform: `rotate(${v.bearing.toFixed(0)})` }));
      }
      g.appendChild(el("text", { y: 4, class: "route-label" }, routeName(v.route) || "?"));
    }
  }

  // ---- words -----------------------------------------------------------------------------------------

  function routeName(routeId) {
    if (!routeId) return null;
    const route = state.gtfs && state.gtfs.routes[routeId];
    return route ? route.name : routeId;
  }

  function stopName(stopId) {
    if (!stopId) return null;
    const stop = state.gtfs && state.gtfs.stops[stopId];
    return stop ? stop.name : stopId;
  }

  function nextStopText(v) {
    if (!v.nextStop) return null;
    if (v.inMinutes === null) return stopName(v.nextStop);
    return `${stopName(v.nextStop)} (${v.inMinutes ? "in " + v.inMinutes + " min" : "now"})`;
  }

  function delayText(delay) {
    if (delay === null || delay === undefined) return null;
    const minutes = Math.round(Math.abs(delay) / 60);
    if (minutes === 0) return "on time";
    return delay > 0 ? `${minutes} min late` : `${minutes} min early`;
  }

  function crowdingText(v) {
    if (!v.occupancy) return null;
    const words = OCCUPANCY[v.occupancy] || v.occupancy.toLowerCase().replace(/_/g, " ");
    return typeof v.percentage === "number" ? `${words} (${v.percentage} %)` : words;
  }

  function vehicleText(v) {
    const parts = [`${v.label}`];
    if (v.route) parts.push(`route ${routeName(v.route)}`);
    if (v.nextStop) parts.push(`next stop ${nextStopText(v)}`);
    if (delayText(v.delay)) parts.push(delayText(v.delay));
    if (crowdingText(v)) parts.push(crowdingText(v));
    return parts.join(", ");
  }

  function lampText(c) {
    const parts = [];
    for (const k of ["on", "dimmed", "off", "fault"]) if (c[k]) parts.push(`${c[k]} ${k}`);
    return parts.join(", ") || "no lamps reported";
  }

  function valuesText(values) {
    return Object.keys(values)
      .filter((k) => k !== "lat" && k !== "lon" && typeof values[k] === "number")
      .slice(0, 6)
      .map((k) => `${k} ${Number.isInteger(values[k]) ? values[k] : values[k].toFixed(2)}`)
      .join(", ");
  }

  function needsKey(answer, what, role) {
    if (answer.ok) return "";
    if (answer.status === 401) return key() ? `Your key was refused: ${detail(answer)}.` : `${what} need ${role} key.`;
    if (answer.status === 403) return `${what} need ${role} key; yours may not (${detail(answer)}).`;
    return `${what}: the API answered ${detail(answer)}.`;
  }

  // ---- the panels -----------------------------------------------------------------------------------

  function render(picture) {
    const vehicles = vehicleRows(picture);
    const stations = picture.air.ok ? picture.air.body.stations : [];
    draw(picture, vehicles, stations);

    fill("vehicles", vehicles, (tr, v) => {
      tr.dataset.vehicle = v.id;
      cell(tr, v.label); cell(tr, routeName(v.route)); cell(tr, nextStopText(v));
      cell(tr, delayText(v.delay)); cell(tr, crowdingText(v));
    });
    $("vehicles-note").textContent = !picture.vehicles.ok ? `Vehicles: ${detail(picture.vehicles)}.`
      : vehicles.length ? (state.gtfs ? "" : state.gtfsProblem || "No static GTFS loaded: stops by id, no routes drawn.")
      : "No vehicle has reported a position lately.";

    fill("air", stations, (tr, s) => {
      tr.dataset.device = s.device;
      cell(tr, s.device); cell(tr, s.district);
      cell(tr, s.index ? `${s.index.band} ${s.index.level}` : s.stale ? "stale" : "–",
        { class: "band " + (s.index ? "band-" + s.index.band : "band-none") });
      cell(tr, s.index ? s.index.pollutant : null);
    });
    const city = picture.city.ok && picture.city.body.city;
    $("air-city").textContent = city ? `The city now: ${city.index.level} (worst at ${city.station}), ${picture.city.body.table}.` : "";
    $("air-note").textContent = picture.air.ok ? (stations.length ? "" : "No air-quality station has reported.")
      : `Air quality: ${detail(picture.air)}.`;

    const cabinets = Object.keys(picture.lamps).sort();
    fill("cabinets", cabinets, (tr, c) => {
      const counts = picture.lamps[c];
      tr.dataset.device = c;
      cell(tr, c); cell(tr, cabinetState(counts), { class: "state-" + cabinetState(counts) }); cell(tr, lampText(counts));
    });
    $("lighting-note").textContent = cabinets.length ? "" : "No lamp cabinet has reported.";

    const meters = Object.keys(picture.meters).sort();
    fill("meters", meters, (tr, m) => {
      const meter = picture.meters[m];
      tr.dataset.device = m;
      cell(tr, `${m} (${meter.measurement})`); cell(tr, valuesText(meter.values));
      cell(tr, meter.age_s === null ? null : `${Math.round(meter.age_s)} s`);
    });
    $("meters-note").textContent = picture.summary.ok ? (meters.length ? "" : "No meter has reported.")
      : needsKey(picture.summary, "Meters' own values", "a utility's or an engineer's") + " Shown: the open-data subset.";

    const agents = picture.agents.ok ? picture.agents.body : [];
    fill("agents", agents, (tr, a) => {
      tr.dataset.agent = a.id;
      tr.dataset.state = a.state;
      cell(tr, a.id); cell(tr, a.site || "(unassigned)"); cell(tr, a.state, { class: "agent-" + a.state });
      cell(tr, a.journal_backlog === null ? null : `${a.journal_backlog} queued, ${a.journal_dropped || 0} dropped`);
      const health = Object.entries(a.device_health || {}).map(([d, h]) => `${d}: ${h.state}`).join(", ");
      cell(tr, health || "no report yet");
    });
    $("agents-note").textContent = needsKey(picture.agents, "Agents and device health", "an engineer's");

    renderDimForm(picture, cabinets);
    renderKeyState(picture);
    $("status").textContent = `Updated ${new Date().toLocaleTimeString()}: ${vehicles.length} vehicles, ` +
      `${stations.length} air-quality stations, ${cabinets.length} lamp cabinets, ${meters.length} meters` +
      (picture.agents.ok ? `, ${agents.length} agents.` : ".");
    document.body.dataset.loaded = "true";
  }

  function renderDimForm(picture, cabinets) {
    const form = $("dim-form");
    const commandable = picture.agents.ok ? cabinets.filter((c) => c in picture.cabinetAgents) : [];
    form.hidden = commandable.length === 0;
    if (!commandable.length) {
      if (!$("command-state").textContent) {
        $("command-state").textContent = picture.agents.ok ? "" : "Dimming a lamp group needs an engineer's key.";
      }
      return;
    }
    if ($("command-state").textContent.startsWith("Dimming a lamp group needs")) $("command-state").textContent = "";
    const select = $("dim-cabinet");
    const listed = JSON.stringify(commandable.map((c) => [picture.cabinetAgents[c], c]));
    if (select.dataset.listed === listed) return; // the same cabinets: leave the choice alone
    select.dataset.listed = listed;
    const chosen = select.value;
    select.replaceChildren(...commandable.map((c) => {
      const option = document.createElement("option");
      option.value = JSON.stringify([picture.cabinetAgents[c], c]);
      option.textContent = `${c} (agent ${picture.cabinetAgents[c]})`;
      return option;
    }));
    if (chosen && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }

  function renderKeyState(picture) {
    const text = !key()
      ? "No key: public data only. Meters' values need a utility's or an engineer's key (open in the demo); " +
        "agents, device health and lamp commands need an engineer's key."
      : picture.agents.ok ? "Key in use: engineer (agents, device health and lamp commands shown)."
      : picture.agents.status === 401 ? `Key refused: ${detail(picture.agents)}.`
      : picture.summary.ok ? "Key in use: it reads telemetry; agents and commands need an engineer's key."
      : `Key in use, but: ${detail(picture.summary)}.`;
    $("key-state").textContent = text;
    $("key-state").dataset.role = picture.agents.ok ? "engineer" : key() ? "other" : "none";
  }

  // ---- actions --------------------------------------------------------------------------------------

  async function sendDim(event) {
    event.preventDefault();
    const [agent, device] = JSON.parse($("dim-cabinet").value);
    const body = {
      device, action: "dim", level: Number($("dim-level").value),
      target: { kind: "group", address: Number($("dim-group").value) },
    };
    const out = $("command-state");
    out.dataset.status = "sending";
    out.textContent = `Sending: dim group ${body.target.address} of ${device} to ${body.level} %…`;
    const answer = await api(`/v1/agents/${encodeURIComponent(agent)}/commands`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).catch((error) => ({ status: 0, ok: false, body: String(error) }));
    if (!answer.ok) {
      out.dataset.status = "refused";
      out.textContent = `Not accepted: ${detail(answer)}`;
      return;
    }
    follow(agent, answer.body);
  }

  function follow(agent, command) {
    const out = $("command-state");
    out.dataset.command = command.id;
    out.dataset.status = command.status;
    out.textContent = `Command ${command.id} accepted: dim group ${command.target.address} of ${command.device} ` +
      `to ${command.level} %, ${command.status}${command.detail ? " (" + command.detail + ")" : ""}.`;
    clearTimeout(state.commandTimer);
    if (!["scheduled", "sent"].includes(command.status)) return;
    state.commandTimer = setTimeout(async () => {
      const answer = await api(`/v1/agents/${encodeURIComponent(agent)}/commands/${command.id}`).catch(() => null);
      if (answer && answer.ok && out.dataset.command === command.id) follow(agent, answer.body);
    }, 2000);
  }

  // ---- the loop -------------------------------------------------------------------------------------

  // One refresh at a time; a key typed in meanwhile asks for another as soon as this one ends.
  async function refresh() {
    clearTimeout(state.timer);
    if (state.busy) { state.again = true; return; }
    state.busy = true;
    try {
      await loadGtfs().catch((error) => { state.gtfsProblem = `Static GTFS unreadable: ${error.message}.`; });
      render(await collect());
    } catch (error) {
      $("status").textContent = `Could not update: ${error.message}`;
    } finally {
      state.busy = false;
      state.timer = setTimeout(refresh, state.again ? 0 : REFRESH_MS);
      state.again = false;
    }
  }

  function start() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const typed = $("key-input").value.trim();
      if (typed) sessionStorage.setItem(KEY_STORAGE, typed);
      $("key-input").value = "";
      refresh();
    });
    $("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      $("command-state").textContent = "";
      refresh();
    });
    $("dim-form").addEventListener("submit", sendDim);
    refresh();
  }

  start();
})();
