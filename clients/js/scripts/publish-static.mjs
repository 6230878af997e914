// Copies what the server's map page needs into tracker_ws/web/static (committed there, so the
// Python package and its Docker image carry them without Node):
//   sdk/            the compiled SDK (dist/*.js, built by `tsc` before this runs)
//   vendor/leaflet/ Leaflet's dist files and its license (from node_modules)
// `--check` compiles the source afresh into a temporary directory and exits 1 when a committed
// copy differs from what the source and the installed Leaflet give (tests run it).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '..');
const staticDir = path.resolve(pkg, '../../tracker_ws/web/static');
const leaflet = path.join(pkg, 'node_modules/leaflet');

function plan(distDir) {
  const files = []; // [from, to]
  for (const name of fs.readdirSync(distDir).sort()) {
    if (name.endsWith('.js')) files.push([path.join(distDir, name), path.join(staticDir, 'sdk', name)]);
  }
  const vendor = path.join(staticDir, 'vendor/leaflet');
  files.push([path.join(leaflet, 'dist/leaflet.js'), path.join(vendor, 'leaflet.js')]);
  files.push([path.join(leaflet, 'dist/leaflet.css'), path.join(vendor, 'leaflet.css')]);
  files.push([path.join(leaflet, 'LICENSE'), path.join(vendor, 'LICENSE')]);
  for (const name of fs.readdirSync(path.join(leaflet, 'dist/images')).sort()) {
    files.push([path.join(leaflet, 'dist/images', name), path.join(vendor, 'images', name)]);
  }
  return files;
}

if (process.argv.includes('--check')) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tracker-ws-sdk-'));
  try {
    const tsc = path.join(pkg, 'node_modules/typescript/bin/tsc');
    execFileSync(process.execPath, [tsc, '-p', path.join(pkg, 'tsconfig.json'), '--outDir', tmp], {
      stdio: 'inherit',
    });
    const stale = plan(tmp).filter(
      ([from, to]) => !fs.existsSync(to) || !fs.readFileSync(from).equals(fs.readFileSync(to)),
    );
    const expected = new Set(plan(tmp).map(([, to]) => to));
    const extra = fs
      .readdirSync(path.join(staticDir, 'sdk'))
      .map((n) => path.join(staticDir, 'sdk', n))
      .filter((p) => !expected.has(p));
    if (stale.length || extra.length) {
      for (const [, to] of stale) console.error(`stale: ${path.relative(pkg, to)}`);
      for (const p of extra) console.error(`not built from the source: ${path.relative(pkg, p)}`);
      console.error('run `make sdk` (or `cd clients/js && npm run build`) and commit the result');
      process.exit(1);
    }
    console.log('tracker_ws/web/static/sdk and vendor/leaflet are up to date');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
} else {
  for (const [from, to] of plan(path.join(pkg, 'dist'))) {
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(from, to);
  }
  console.log(`copied the SDK and Leaflet into ${path.relative(process.cwd(), staticDir)}`);
}
