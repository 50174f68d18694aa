// Builds the prebuilt extension with @jupyterlab/builder, against JupyterLab's
// core metadata from @jupyterlab/core-meta (what `jupyter labextension build`
// passes as --core-path), so the build needs node and npm only, no Python.
// Usage: node scripts/build-labextension.js [--development]
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const here = path.resolve(__dirname, '..');
const meta = path.dirname(require.resolve('@jupyterlab/core-meta/package.json', { paths: [here] }));
const core = path.join(here, 'node_modules', '.core-path');
fs.mkdirSync(core, { recursive: true });
fs.copyFileSync(path.join(meta, 'core.package.json'), path.join(core, 'package.json'));
const builder = require.resolve('@jupyterlab/builder/lib/build-labextension.js', { paths: [here] });
const args = [builder, '--core-path', core, ...process.argv.slice(2), here];
const result = spawnSync(process.execPath, args, { stdio: 'inherit', cwd: here });
process.exit(result.status === null ? 1 : result.status);
