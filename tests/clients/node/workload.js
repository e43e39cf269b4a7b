#!/usr/bin/env node
// The scripted workload every Node.js client runs against cachecloak
// (tests/test_clients_node.py starts the proxy and a real Redis, then runs this file).
//
//   node workload.js VARIANT HOST PORT
//
// VARIANT is one of the keys of VARIANTS below.  The workload covers strings with
// expiry, counters, hashes, a MULTI/EXEC transaction and a pipeline of 1,000 commands,
// and checks every reply.  On success it prints one JSON line: the client's name and
// version, the protocol it spoke, and every key, field and value it wrote in plaintext,
// so that the test can show Redis holds none of them.  Any failed check exits 1 with
// the reason on stderr.  It never runs longer than DEADLINE_MS.
'use strict';

const assert = require('node:assert/strict');

const DEADLINE_MS = 60_000;
const PIPELINE_ROUNDS = 250; // 4 commands a round: a pipeline of 1,000 commands

const [variant, host, portText] = process.argv.slice(2);
const port = Number(portText);
const written = new Set(); // plaintext keys, fields and values, for the ciphertext check

function note(...texts) {
  for (const t of texts) written.add(String(t));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A client-neutral view of the replies: node-redis gives RESP3 maps as objects (or Maps)
// and ioredis gives arrays for RESP2 hashes; compare hashes as plain objects.
function asObject(reply) {
  if (reply instanceof Map) return Object.fromEntries(reply);
  if (Array.isArray(reply)) {
    const out = {};
    for (let i = 0; i < reply.length; i += 2) out[reply[i]] = reply[i + 1];
    return out;
  }
  return { ...reply };
}

// ---------------------------------------------------------------------------------------
// The workload, written against a small adapter so both client families run the same
// steps through their own idiomatic API.

async function workload(api, prefix) {
  // Every key, field and value holds the prefix (which holds a ':', a character no
  // base64url digest has), so finding one in Redis cannot be a coincidence.
  const k = (name) => `${prefix}${name}`;
  const v = (name) => `plain-${prefix}${name}-value`;
  const f = (name) => `field-${prefix}${name}`;

  // Strings with expiry.
  note(k('s1'), v('s1'), k('short'), v('short'), k('keep'), v('keep'));
  assert.equal(await api.setEx(k('s1'), v('s1'), 100), 'OK');
  assert.equal(await api.get(k('s1')), v('s1'));
  const ttl = await api.ttl(k('s1'));
  assert.ok(ttl > 0 && ttl <= 100, `TTL ${ttl}`);
  assert.equal(await api.ttl(k('missing')), -2);
  assert.equal(await api.setPx(k('short'), v('short'), 150), 'OK');
  assert.equal(await api.set(k('keep'), v('keep')), 'OK');
  assert.equal(await api.ttl(k('keep')), -1);
  await sleep(400);
  assert.equal(await api.get(k('short')), null, 'a key set with PX 150 expired');
  assert.equal(await api.get(k('missing')), null);
  // Multi-key commands: the keys share a hash tag, as cluster clients require.
  const tag = `${prefix}multi`;
  const [m1, m2, mx] = [k(`{${tag}}1`), k(`{${tag}}2`), k(`{${tag}}missing`)];
  note(m1, m2, v('m1'), v('m2'), tag);
  assert.equal(await api.mset({ [m1]: v('m1'), [m2]: v('m2') }), 'OK');
  assert.deepEqual(await api.mget([m1, mx, m2]), [v('m1'), null, v('m2')]);
  assert.equal(await api.del([m1, mx]), 1);

  // Counters.
  note(k('counter'), k('float'));
  assert.equal(await api.incr(k('counter')), 1);
  assert.equal(await api.incrBy(k('counter'), 41), 42);
  assert.equal(await api.decr(k('counter')), 41);
  assert.equal(await api.get(k('counter')), '41');
  assert.equal(String(await api.incrByFloat(k('float'), 2.5)), '2.5');
  assert.equal(String(await api.incrByFloat(k('float'), 0.25)), '2.75');
  await assert.rejects(api.incr(k('s1')), /not an integer/);

  // Hashes.
  const h = k('hash');
  const [name, city, visits] = [f('name'), f('city'), f('visits')];
  note(h, name, v('name'), city, v('city'), visits);
  assert.equal(await api.hset(h, { [name]: v('name'), [city]: v('city') }), 2);
  assert.equal(await api.hget(h, name), v('name'));
  assert.equal(await api.hget(h, f('nope')), null);
  assert.equal(await api.hincrBy(h, visits, 3), 3);
  assert.deepEqual(asObject(await api.hgetall(h)),
    { [name]: v('name'), [city]: v('city'), [visits]: '3' });
  assert.equal(await api.hdel(h, [city, f('nope')]), 1);
  assert.equal(await api.hlen(h), 2);
  assert.equal(await api.expire(h, 500), 1);

  // A transaction.
  // The keys share a hash tag: a cluster client sends a transaction to one slot.
  const [ta, tc, th] = [k(`{${tag}}tx:a`), k(`{${tag}}tx:c`), k(`{${tag}}tx:h`)];
  note(ta, v('tx'), tc, th, f('tx'), v('txfield'));
  const exec = await api.multi([
    ['set', ta, v('tx')],
    ['incr', tc],
    ['hset', th, f('tx'), v('txfield')],
    ['get', ta],
    ['hget', th, f('tx')],
    ['incrby', tc, 9],
  ]);
  assert.deepEqual(exec, ['OK', 1, 1, v('tx'), v('txfield'), 10]);

  // A pipeline of 1,000 commands (or, with auto-pipelining, 1,000 concurrent calls).
  const commands = [];
  const expected = [];
  let sum = 0;
  for (let i = 0; i < PIPELINE_ROUNDS; i++) {
    const key = k(`p:${i}`);
    const value = `plain-pipe-${prefix}${i}-` + 'z'.repeat(i % 37);
    note(key, value, f(`p${i}`));
    commands.push(['set', key, value], ['get', key], ['incrby', k('p:sum'), i],
      ['hset', k('p:hash'), f(`p${i}`), value]);
    sum += i;
    expected.push('OK', value, sum, 1);
  }
  note(k('p:sum'), k('p:hash'));
  assert.equal(commands.length, 4 * PIPELINE_ROUNDS);
  assert.deepEqual(await api.pipeline(commands), expected);
  assert.equal(await api.get(k('p:sum')), String(sum));
  assert.equal(await api.hlen(k('p:hash')), PIPELINE_ROUNDS);
  assert.equal(await api.hget(k('p:hash'), f('p7')), `plain-pipe-${prefix}7-` + 'z'.repeat(7));
  return commands.length;
}

// ---------------------------------------------------------------------------------------
// ioredis (standalone, auto-pipelining, and its Cluster client).

function ioredisApi(client, { autoPipeline = false } = {}) {
  // ioredis's pipeline/multi results are [error, value] pairs; a failed step throws.
  const unwrap = (results) => results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
  return {
    setEx: (key, value, s) => client.set(key, value, 'EX', s),
    setPx: (key, value, ms) => client.set(key, value, 'PX', ms),
    set: (key, value) => client.set(key, value),
    get: (key) => client.get(key),
    ttl: (key) => client.ttl(key),
    mset: (pairs) => client.mset(pairs),
    mget: (keys) => client.mget(keys),
    del: (keys) => client.del(...keys),
    incr: (key) => client.incr(key),
    incrBy: (key, n) => client.incrby(key, n),
    decr: (key) => client.decr(key),
    incrByFloat: (key, n) => client.incrbyfloat(key, n),
    hset: (key, obj) => client.hset(key, obj),
    hget: (key, f) => client.hget(key, f),
    hincrBy: (key, f, n) => client.hincrby(key, f, n),
    hgetall: (key) => client.hgetall(key),
    hdel: (key, fields) => client.hdel(key, ...fields),
    hlen: (key) => client.hlen(key),
    expire: (key, s) => client.expire(key, s),
    multi: async (commands) => unwrap(await client.multi(commands).exec()),
    pipeline: async (commands) => {
      if (autoPipeline) {
        // Each call on its own: ioredis batches everything issued in one tick.
        return Promise.all(commands.map(([name, ...args]) => client[name](...args)));
      }
      return unwrap(await client.pipeline(commands).exec());
    },
  };
}

function respOf(clientInfo) {
  const match = /(?:^| )resp=(\d)/.exec(String(clientInfo));
  assert.ok(match, 'CLIENT INFO has resp=');
  return `RESP${match[1]}`;
}

// ioredis 6 speaks RESP3 by default (HELLO 3 at connect) with RESP2-shaped replies
// ("legacy" mapping); `protocol: 2` keeps RESP2; replyMapping "resp3" gives objects.
const IOREDIS_PROTOCOL = {
  resp3: { protocol: 3 },
  resp2: { protocol: 2 },
  autopipeline: { protocol: 3, replyMapping: 'resp3', enableAutoPipelining: true },
  cluster: { protocol: 3 },
};

async function runIoredis(kind) {
  const Redis = require('ioredis');
  const version = require('ioredis/package.json').version;
  const common = { connectTimeout: 10_000, maxRetriesPerRequest: 2, connectionName: 'wl-ioredis',
    ...IOREDIS_PROTOCOL[kind] };
  let client;
  if (kind === 'cluster') {
    // A Cluster client given cachecloak's single address: it discovers the topology
    // with CLUSTER SLOTS and checks CLUSTER INFO, then routes every slot here.
    client = new Redis.Cluster([{ host, port }], {
      redisOptions: common,
      enableAutoPipelining: true,
      slotsRefreshTimeout: 5_000,
      clusterRetryStrategy: () => null,
    });
  } else {
    client = new Redis({ host, port, ...common, db: 1 }); // db: SELECT at connect
  }
  client.on('error', (err) => process.stderr.write(`ioredis error event: ${err.message}\n`));
  try {
    const pong = await client.ping();
    assert.equal(pong, 'PONG');
    if (kind === 'cluster') {
      const nodes = client.nodes('master');
      assert.equal(nodes.length, 1, 'one node owns every slot');
      assert.equal(`${nodes[0].options.host}:${nodes[0].options.port}`, `${host}:${port}`);
    }
    const node = kind === 'cluster' ? client.nodes('master')[0] : client;
    assert.equal(await node.client('GETNAME'), 'wl-ioredis');
    const protocol = respOf(await node.client('INFO'));
    const count = await workload(ioredisApi(client, { autoPipeline: kind === 'autopipeline' }),
      `io-${kind}:`);
    return { client: 'ioredis', version, protocol, variant: `ioredis-${kind}`, commands: count };
  } finally {
    client.disconnect();
  }
}

// ---------------------------------------------------------------------------------------
// node-redis (the `redis` package), RESP2 and RESP3, standalone and cluster.

function nodeRedisApi(client) {
  const camel = { set: 'set', get: 'get', incr: 'incr', incrby: 'incrBy', hset: 'hSet', hget: 'hGet' };
  const add = (target, [name, ...args]) => {
    const method = camel[name];
    if (name === 'hset') return target[method](args[0], args[1], args[2]);
    return target[method](...args);
  };
  return {
    setEx: (key, value, s) => client.set(key, value, { EX: s }),
    setPx: (key, value, ms) => client.set(key, value, { PX: ms }),
    set: (key, value) => client.set(key, value),
    get: (key) => client.get(key),
    ttl: (key) => client.ttl(key),
    mset: (pairs) => client.mSet(pairs),
    mget: (keys) => client.mGet(keys),
    del: (keys) => client.del(keys),
    incr: (key) => client.incr(key),
    incrBy: (key, n) => client.incrBy(key, n),
    decr: (key) => client.decr(key),
    incrByFloat: (key, n) => client.incrByFloat(key, n),
    hset: (key, obj) => client.hSet(key, obj),
    hget: (key, f) => client.hGet(key, f),
    hincrBy: (key, f, n) => client.hIncrBy(key, f, n),
    hgetall: (key) => client.hGetAll(key),
    hdel: (key, fields) => client.hDel(key, fields),
    hlen: (key) => client.hLen(key),
    expire: (key, s) => client.expire(key, s),
    multi: (commands) => {
      let m = client.multi();
      for (const c of commands) m = add(m, c);
      return m.exec();
    },
    pipeline: (commands) => {
      let m = client.multi();
      for (const c of commands) m = add(m, c);
      return m.execAsPipeline();
    },
  };
}

async function runNodeRedis(resp, kind) {
  const { createClient, createCluster } = require('redis');
  const version = require('redis/package.json').version;
  const socket = { host, port, connectTimeout: 10_000, reconnectStrategy: false };
  let client;
  if (kind === 'cluster') {
    client = createCluster({ rootNodes: [{ socket }], RESP: resp, defaults: { name: 'wl-node-redis' } });
  } else {
    // database 2: node-redis sends SELECT at connect; name: HELLO SETNAME / CLIENT SETNAME.
    client = createClient({ socket, RESP: resp, database: 2, name: 'wl-node-redis' });
  }
  client.on('error', (err) => process.stderr.write(`node-redis error event: ${err.message}\n`));
  await client.connect();
  try {
    assert.equal(await client.ping(), 'PONG');
    let node = client;
    if (kind === 'cluster') {
      assert.equal(client.masters.length, 1, 'one node owns every slot');
      node = await client.nodeClient(client.masters[0]);
    } else {
      assert.equal(Number((await client.clientInfo()).db), 2);
    }
    assert.equal(await node.clientGetName(), 'wl-node-redis');
    assert.equal(Number((await node.clientInfo()).resp), resp, 'negotiated protocol');
    const count = await workload(nodeRedisApi(client), `nr${resp}-${kind}:`);
    return { client: 'redis (node-redis)', version, protocol: `RESP${resp}`,
      variant: `node-redis-resp${resp}-${kind}`, commands: count };
  } finally {
    await client.close();
  }
}

const VARIANTS = {
  'ioredis-resp3': () => runIoredis('resp3'),
  'ioredis-resp2': () => runIoredis('resp2'),
  'ioredis-autopipeline': () => runIoredis('autopipeline'),
  'ioredis-cluster': () => runIoredis('cluster'),
  'node-redis-resp2': () => runNodeRedis(2, 'standalone'),
  'node-redis-resp3': () => runNodeRedis(3, 'standalone'),
  'node-redis-cluster': () => runNodeRedis(3, 'cluster'),
};

async function main() {
  const run = VARIANTS[variant];
  if (!run || !host || !port) {
    process.stderr.write(`usage: node workload.js {${Object.keys(VARIANTS).join('|')}} HOST PORT\n`);
    process.exit(2);
  }
  const timer = setTimeout(() => {
    process.stderr.write(`workload ${variant} did not finish within ${DEADLINE_MS} ms\n`);
    process.exit(1);
  }, DEADLINE_MS);
  try {
    const result = await run();
    process.stdout.write(JSON.stringify({ ...result, written: [...written] }) + '\n');
  } catch (err) {
    process.stderr.write(`workload ${variant} failed: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 1;
  } finally {
    clearTimeout(timer);
  }
}

main();
