#!/usr/bin/env bash
# Refreshes the dashboard's vendored uPlot (static/vendor/uplot) from npm at
# the version package-lock.json pins, and records what was copied in
# uplot.sum.json, which assets_test.go checks on every `go test` (no network).
# Run through `make dashboard-assets`; to move to another uPlot version, change
# package.json, run `npm install --ignore-scripts` here, then this.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
dest=static/vendor/uplot
rm -rf "$dest"
mkdir -p "$dest"
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css node_modules/uplot/LICENSE "$dest/"
node - "$dest" > uplot.sum.json <<'JS'
const fs = require("fs"), path = require("path"), crypto = require("crypto");
const dest = process.argv[2];
const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages["node_modules/uplot"];
const files = {};
for (const f of fs.readdirSync(dest).sort()) {
  files[f] = crypto.createHash("sha256").update(fs.readFileSync(path.join(dest, f))).digest("hex");
}
process.stdout.write(JSON.stringify({package: "uplot", version: lock.version, integrity: lock.integrity, files}, null, 2) + "\n");
JS
echo "dashboard-assets: uplot $(node -p 'require("./package-lock.json").packages["node_modules/uplot"].version') in $dest"
