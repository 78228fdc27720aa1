import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { parseBytes, parseCompose, parseDurationNs, type ComposeApp } from '../../src/runtimes/compose/model.js';

function ok(composeYaml: string, env: Record<string, string> = {}, profiles?: string[]): ComposeApp {
  const r = parseCompose({ project: 'shop', composeYaml, env, profiles });
  if (!r.ok) assert.fail(`expected a valid file, got ${JSON.stringify(r.issues)}`);
  return r.app;
}

function issues(composeYaml: string, env: Record<string, string> = {}): string[] {
  const r = parseCompose({ project: 'shop', composeYaml, env });
  assert.ok(!r.ok, 'expected the file to be rejected');
  return r.issues.map((i) => `${i.path}: ${i.message}`);
}

describe('compose parsing', () => {
  it('sizes and durations the way compose reads them', () => {
    assert.equal(parseBytes('1g'), 1024 ** 3);
    assert.equal(parseBytes('1024m'), 1024 ** 3);
    assert.equal(parseBytes('512k'), 512 * 1024);
    assert.equal(parseBytes('1.5gb'), 1.5 * 1024 ** 3);
    assert.equal(parseBytes(100), 100);
    assert.equal(parseBytes('lots'), undefined);
    assert.equal(parseDurationNs('1m30s'), 90e9);
    assert.equal(parseDurationNs('500ms'), 5e8);
    assert.equal(parseDurationNs('1.5s'), 1.5e9);
    assert.equal(parseDurationNs(10), 10e9);
    assert.equal(parseDurationNs('soon'), undefined);
  });

  it('short and long syntax of ports, volumes and depends_on come out the same', () => {
    const a = ok(`
services:
  api:
    image: x
    ports: ["127.0.0.1:8080:80", "9000/udp", 7000]
    volumes: ["data:/data:ro", "/srv:/srv", "/anon"]
    depends_on: [db]
  db: { image: y }
volumes: { data: {} }
`);
    const b = ok(`
services:
  api:
    image: x
    ports:
      - { target: 80, published: 8080, host_ip: 127.0.0.1 }
      - { target: 9000, protocol: udp }
      - { target: 7000 }
    volumes:
      - { type: volume, source: data, target: /data, read_only: true }
      - { type: bind, source: /srv, target: /srv }
      - { type: volume, target: /anon }
    depends_on: { db: { condition: service_started } }
  db: { image: y }
volumes: { data: {} }
`);
    const api = (app: ComposeApp) => app.services.find((s) => s.name === 'api');
    assert.deepEqual(api(a)?.ports, api(b)?.ports);
    assert.deepEqual(api(a)?.volumes, api(b)?.volumes);
    assert.deepEqual(api(a)?.dependsOn, api(b)?.dependsOn);
    assert.deepEqual(api(a)?.ports, [
      { target: 80, protocol: 'tcp', published: 8080, hostIp: '127.0.0.1' },
      { target: 9000, protocol: 'udp' },
      { target: 7000, protocol: 'tcp' },
    ]);
  });

  it('services come in dependency order; names are project-prefixed; env from the spec', () => {
    const app = ok(
      `
services:
  web: { image: x, depends_on: [api], ports: ["\${PORT:-80}:80"] }
  api: { image: x, depends_on: { db: { condition: service_healthy } }, environment: [TOKEN, "A=\${A}"] }
  db: { image: x, volumes: ["data:/d"], healthcheck: { test: "true" } }
volumes: { data: {}, ext: { external: true }, named: { name: custom } }
networks: { back: {} }
`,
      { A: 'a', TOKEN: 't', PORT: '8080' },
    );
    assert.deepEqual(app.services.map((s) => s.name), ['db', 'api', 'web']);
    assert.deepEqual(app.services[1]?.environment, { TOKEN: 't', A: 'a' });
    assert.equal(app.services[2]?.ports[0]?.published, 8080);
    assert.equal(app.volumes.get('data')?.name, 'shop_data');
    assert.equal(app.volumes.get('ext')?.name, 'ext');
    assert.equal(app.volumes.get('named')?.name, 'custom');
    assert.equal(app.networks.get('default')?.name, 'shop_default');
    assert.equal(app.networks.get('back')?.name, 'shop_back');
    assert.deepEqual(app.services[0]?.healthcheck, { test: ['CMD-SHELL', 'true'] });
  });

  it('every unsupported key is an error naming its path, never ignored', () => {
    assert.deepEqual(
      issues(`
services:
  api:
    image: x
    devices: ["/dev/kvm"]
    privileged: true
    ports: [{ target: 80, weird: 1 }]
    healthcheck: { test: "true", every: 1s }
networks: { n: { bogus: 1 } }
include: [other.yml]
x-ok: fine
`),
      ['services.api.devices: not supported', 'services.api.privileged: not supported', 'services.api.ports[0].weird: not supported', 'services.api.healthcheck.every: not supported', 'include: not supported', 'networks.n.bogus: not supported'].sort((a, b) => order(a) - order(b)),
    );
  });

  it('a build-only service needs an image; build with image uses the image', () => {
    assert.deepEqual(issues('services:\n  api:\n    build: .\n'), ['services.api: has only `build`: an agent cannot build images, so the service needs an `image`']);
    assert.equal(ok('services:\n  api:\n    build: .\n    image: x:1\n').services[0]?.image, 'x:1');
  });

  it('a dependency cycle names the cycle', () => {
    assert.deepEqual(issues('services:\n  a: { image: x, depends_on: [b] }\n  b: { image: x, depends_on: [c] }\n  c: { image: x, depends_on: [a] }\n'), ['services: dependency cycle: a -> b -> c -> a']);
  });

  it('required: false turns a missing dependency into a warning', () => {
    const app = ok('services:\n  a: { image: x, depends_on: { ghost: { condition: service_started, required: false } } }\n');
    assert.deepEqual(app.warnings, ['services.a.depends_on.ghost: is not a service of this file; required: false, so it is skipped']);
    assert.deepEqual(issues('services:\n  a: { image: x, depends_on: [ghost] }\n'), ['services.a.depends_on.ghost: is not a service of this file']);
  });

  it('secrets and configs come inline or from the spec env; files are refused', () => {
    const app = ok(
      `
services:
  api: { image: x, secrets: [db_pw, { source: tls, target: tls.pem, mode: 0440 }], configs: [conf] }
secrets:
  db_pw: { environment: DB_PW }
  tls: { content: "-----BEGIN-----" }
configs:
  conf: { content: "a=1" }
`,
      { DB_PW: 'hunter2' },
    );
    const api = app.services[0];
    assert.deepEqual(api?.secrets, [
      { source: 'db_pw', target: '/run/secrets/db_pw', mode: 0o400 },
      { source: 'tls', target: '/run/secrets/tls.pem', mode: 0o440 },
    ]);
    assert.deepEqual(api?.configs, [{ source: 'conf', target: '/conf', mode: 0o400 }]);
    assert.equal(app.secrets.get('db_pw')?.content, 'hunter2');
    assert.deepEqual(issues('services:\n  a: { image: x, secrets: [s] }\nsecrets:\n  s: { file: ./s.txt }\n'), [
      'secrets.s.file: not supported',
      'secrets.s: needs `content` or `environment` (files and external ones are not supported on an agent)',
    ]);
    assert.deepEqual(issues('services:\n  a: { image: x, secrets: [s] }\nsecrets:\n  s: { environment: NOPE }\n'), ["secrets.s.environment: variable NOPE is not in the workload's env"]);
  });

  it('profiles select services', () => {
    const yaml = 'services:\n  a: { image: x }\n  dbg: { image: x, profiles: [debug] }\n';
    assert.deepEqual(ok(yaml).services.map((s) => s.name), ['a']);
    assert.deepEqual(ok(yaml, {}, ['debug']).services.map((s) => s.name), ['a', 'dbg']);
  });

  it('bad values name the field', () => {
    assert.deepEqual(
      issues(`
services:
  a:
    image: x
    restart: sometimes
    mem_limit: lots
    ports: ["8080-8090:80"]
    volumes: ["./rel:/x", "undeclared:/y"]
    networks: [nowhere]
    labels: { dev.persys.managed: "false" }
`),
      [
        'services.a.restart: must be one of no, always, unless-stopped, on-failure',
        'services.a.ports[0]: port ranges are not supported',
        'services.a.volumes[0]: bind source "./rel" must be an absolute path (there is no project folder on the host)',
        'services.a.volumes[1]: volume "undeclared" is not declared in the top-level volumes',
        'services.a.labels.dev.persys.managed: is reserved (set by the agent)',
        'services.a.mem_limit: must be a size like 512m or 1g',
        'services.a.networks: network "nowhere" is not declared in the top-level networks',
      ],
    );
  });

  it('a value from the file is quoted clipped, so a huge one keeps the message readable', () => {
    const huge = 'a'.repeat(5000);
    const [msg, ...rest] = issues(`services:\n  a:\n    image: x\n    ports: ["${huge}:80"]\n`);
    assert.equal(rest.length, 0);
    assert.match(msg ?? '', /^services\.a\.ports\[0\]: published port "a{70,}… must be 1-65535$/);
    assert.ok((msg ?? '').length < 200, `message of ${msg?.length} characters`);
    const [long] = issues(`services:\n  a:\n    image: x\n    ${'k'.repeat(3000)}: 1\n`);
    assert.ok((long ?? '').length <= 1001, `message of ${long?.length} characters`);
  });

  it('YAML errors, several documents and a name other than the project are refused', () => {
    assert.match(issues('services: [unclosed')[0] ?? '', /^\(root\): YAML: /);
    assert.deepEqual(issues('services:\n  a: { image: x }\n---\nb: 1\n'), ['(root): must hold one YAML document, found 2']);
    assert.deepEqual(issues('name: other\nservices:\n  a: { image: x }\n'), ['name: is "other" but the workload\'s project is "shop"']);
    assert.deepEqual(issues('services:\n  a: { image: x }\n  a: { image: y }\n').length, 1);
  });

  it('anchors and merge keys work (x-* extensions are for them)', () => {
    const app = ok('x-base: &base\n  image: x\n  restart: always\nservices:\n  a:\n    <<: *base\n  b:\n    <<: *base\n    restart: "no"\n');
    assert.deepEqual(app.services.map((s) => [s.name, s.image, s.restart.name]), [['a', 'x', 'always'], ['b', 'x', 'no']]);
  });
});

/** Issues come in walk order: top-level keys first, then services, then networks. */
function order(s: string): number {
  const rank = ['include', 'services', 'networks'];
  return rank.findIndex((r) => s.startsWith(r)) * 100 + (s.includes('devices') ? 1 : s.includes('privileged') ? 2 : s.includes('ports') ? 3 : 4);
}
