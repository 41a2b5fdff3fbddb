// Generates gen/veza/*_pb.js from ../../proto with protoc and protoc-gen-es (target js), so
// the client imports the same messages and service descriptors the server was built from.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const protoDir = join(here, '..', '..', 'proto');
const files = readdirSync(join(protoDir, 'veza')).map((f) => `veza/${f}`);
rmSync(join(here, 'gen'), { recursive: true, force: true });
mkdirSync(join(here, 'gen'));
execFileSync('protoc', [
  `--plugin=protoc-gen-es=${join(here, 'node_modules', '.bin', 'protoc-gen-es')}`,
  `--es_out=${join(here, 'gen')}`,
  '--es_opt=target=js,import_extension=js',
  `-I${protoDir}`,
  ...files,
], { stdio: 'inherit' });
