'use strict';
// stripe-sync-engine behind a plain node:http server, for subsync's benches.
//
// POST /webhooks/stripe hands the raw body and the Stripe-Signature header to
// StripeSync.processWebhook, which verifies the signature and applies the event
// to its tables inside the request; 200 once it returns. This is what its own
// server does, without a web framework: the bench measures the library.
//
// The CommonJS build is required: the ESM build's runMigrations uses __dirname.
// One process per core (node:cluster), as gunicorn.conf.py runs the web
// process; the primary applies the migrations once before forking.
//
// Environment: PORT, DATABASE_URL, STRIPE_WEBHOOK_SECRET, STRIPE_API_PORT (the
// bench's stand-in for Stripe's API on 127.0.0.1), PEER_PROCESSES (default: cores),
// PEER_POOL_MAX (default: the library's own), PEER_READY_FILE (written when
// every process listens).

const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const Stripe = require('stripe');
const { StripeSync, runMigrations } = require('@supabase/stripe-sync-engine');

const env = process.env;
const SCHEMA = 'stripe'; // its migrations name this schema in their SQL
const API_KEY = 'sk_test_bench';

function engine() {
  const poolConfig = { connectionString: env.DATABASE_URL };
  if (env.PEER_POOL_MAX) poolConfig.max = Number(env.PEER_POOL_MAX);
  const sync = new StripeSync({
    poolConfig,
    schema: SCHEMA,
    stripeSecretKey: API_KEY,
    stripeWebhookSecret: env.STRIPE_WEBHOOK_SECRET,
  });
  // Its constructor builds the client with Stripe's host; the same client,
  // pointed at the bench's local stand-in for the few calls it makes.
  sync.stripe = new Stripe(API_KEY, {
    host: '127.0.0.1',
    port: Number(env.STRIPE_API_PORT),
    protocol: 'http',
    maxNetworkRetries: 0,
    appInfo: { name: 'Stripe Postgres Sync' },
  });
  return sync;
}

function answer(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function serve() {
  const sync = engine();
  let failures = 0;
  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/webhooks/stripe') {
      answer(res, 404, '{"error":"not found"}');
      return;
    }
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      sync.processWebhook(Buffer.concat(chunks), req.headers['stripe-signature']).then(
        () => answer(res, 200, '{"received":true}'),
        (err) => {
          const signature = err && err.type === 'StripeSignatureVerificationError';
          if (failures++ < 20) console.error(`processWebhook failed: ${err && err.stack ? err.stack : err}`);
          answer(res, signature ? 400 : 500, JSON.stringify({ error: String(err && err.message) }));
        },
      );
    });
  });
  server.keepAliveTimeout = 5000; // gunicorn.conf.py's keepalive
  server.listen(Number(env.PORT), '127.0.0.1', () => process.send && process.send('listening'));
}

async function primary() {
  await runMigrations({ databaseUrl: env.DATABASE_URL, schema: SCHEMA, logger: console_logger() });
  const processes = Number(env.PEER_PROCESSES || (os.availableParallelism ? os.availableParallelism() : os.cpus().length));
  let listening = 0;
  for (let i = 0; i < processes; i++) {
    const worker = cluster.fork();
    worker.on('message', (msg) => {
      if (msg === 'listening' && ++listening === processes && env.PEER_READY_FILE) {
        fs.writeFileSync(env.PEER_READY_FILE, String(process.pid));
      }
    });
    worker.on('exit', (code, signal) => {
      console.error(`worker ${worker.process.pid} exited (${signal || code})`);
    });
  }
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.kill();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// runMigrations reports its failures only through the logger, so an error is printed, not lost.
function console_logger() {
  const log = (level) => (obj, msg) => console.error(`${level}: ${msg || ''} ${obj instanceof Error ? obj.stack : JSON.stringify(obj)}`);
  return { info: () => {}, warn: log('warn'), error: log('error') };
}

if (cluster.isPrimary) {
  primary().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  serve();
}
