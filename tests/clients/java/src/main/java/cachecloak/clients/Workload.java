package cachecloak.clients;

import io.lettuce.core.ClientOptions;
import io.lettuce.core.KeyValue;
import io.lettuce.core.LettuceFutures;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisCommandExecutionException;
import io.lettuce.core.RedisFuture;
import io.lettuce.core.RedisURI;
import io.lettuce.core.SetArgs;
import io.lettuce.core.TransactionResult;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.async.RedisAsyncCommands;
import io.lettuce.core.api.sync.RedisCommands;
import io.lettuce.core.protocol.ProtocolVersion;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import redis.clients.jedis.DefaultJedisClientConfig;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Pipeline;
import redis.clients.jedis.RedisProtocol;
import redis.clients.jedis.Transaction;
import redis.clients.jedis.exceptions.JedisDataException;
import redis.clients.jedis.params.SetParams;

/**
 * The scripted workload every Java client runs against cachecloak
 * (tests/test_clients_java.py starts the proxy and a real Redis, then runs this class).
 *
 * <pre>java -cp ... cachecloak.clients.Workload VARIANT HOST PORT</pre>
 *
 * <p>VARIANT is jedis-resp2, jedis-resp3, lettuce-resp3 (Lettuce's default) or
 * lettuce-resp2. Same steps as tests/clients/node/workload.js: strings with expiry,
 * counters, hashes, a MULTI/EXEC transaction and a pipeline of 1,000 commands (Lettuce:
 * asynchronous, flushed at once), every reply checked. On success it prints one JSON line
 * with every key, field and value it wrote in plaintext, so the test can show that Redis
 * holds none of them; a failed check exits 1 with the reason on stderr.
 */
public final class Workload {
  private static final int PIPELINE_ROUNDS = 250; // 4 commands a round: 1,000 commands
  private static final Duration TIMEOUT = Duration.ofSeconds(30);

  private final Set<String> written = new LinkedHashSet<>();
  private final String prefix;

  private Workload(String prefix) {
    this.prefix = prefix;
  }

  // Every key, field and value holds the prefix (which holds a ':', a character no
  // base64url digest has), so finding one in Redis cannot be a coincidence.
  private String k(String name) {
    return prefix + name;
  }

  private String v(String name) {
    return "plain-" + prefix + name + "-value";
  }

  private String f(String name) {
    return "field-" + prefix + name;
  }

  private void note(String... texts) {
    written.addAll(Arrays.asList(texts));
  }

  private static void check(Object expected, Object actual, String what) {
    if (!Objects.equals(expected, actual)) {
      throw new AssertionError(what + ": expected " + expected + ", got " + actual);
    }
  }

  private static void checkThat(boolean condition, String what) {
    if (!condition) {
      throw new AssertionError(what);
    }
  }

  private static void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError("interrupted");
    }
  }

  private static String respOf(String clientInfo) {
    for (String field : clientInfo.trim().split(" ")) {
      if (field.startsWith("resp=")) {
        return "RESP" + field.substring(5);
      }
    }
    throw new AssertionError("CLIENT INFO has no resp= field");
  }

  // -------------------------------------------------------------------------------------
  // Jedis: one connection (the Jedis class), RESP2 or RESP3, database 1 (SELECT at connect).

  private String runJedis(String host, int port, RedisProtocol protocol) {
    DefaultJedisClientConfig config = DefaultJedisClientConfig.builder()
        .protocol(protocol).clientName("wl-jedis").database(1)
        .connectionTimeoutMillis(10_000).socketTimeoutMillis(30_000).build();
    try (Jedis jedis = new Jedis(new HostAndPort(host, port), config)) {
      check("PONG", jedis.ping(), "PING");
      check("wl-jedis", jedis.clientGetname(), "CLIENT GETNAME");
      String resp = respOf(jedis.clientInfo());

      // Strings with expiry.
      note(k("s1"), v("s1"), k("short"), v("short"), k("keep"), v("keep"));
      check("OK", jedis.set(k("s1"), v("s1"), SetParams.setParams().ex(100)), "SET EX");
      check(v("s1"), jedis.get(k("s1")), "GET");
      long ttl = jedis.ttl(k("s1"));
      checkThat(ttl > 0 && ttl <= 100, "TTL " + ttl);
      check(-2L, jedis.ttl(k("missing")), "TTL of a missing key");
      check("OK", jedis.set(k("short"), v("short"), SetParams.setParams().px(150)), "SET PX");
      check("OK", jedis.set(k("keep"), v("keep")), "SET");
      check(-1L, jedis.ttl(k("keep")), "TTL without expiry");
      sleep(400);
      check(null, jedis.get(k("short")), "a key set with PX 150 expired");
      String tag = prefix + "multi";
      String m1 = k("{" + tag + "}1");
      String m2 = k("{" + tag + "}2");
      String mx = k("{" + tag + "}missing");
      note(m1, m2, v("m1"), v("m2"), tag);
      check("OK", jedis.mset(m1, v("m1"), m2, v("m2")), "MSET");
      check(Arrays.asList(v("m1"), null, v("m2")), jedis.mget(m1, mx, m2), "MGET");
      check(1L, jedis.del(m1, mx), "DEL");

      // Counters.
      note(k("counter"), k("float"));
      check(1L, jedis.incr(k("counter")), "INCR");
      check(42L, jedis.incrBy(k("counter"), 41), "INCRBY");
      check(41L, jedis.decr(k("counter")), "DECR");
      check("41", jedis.get(k("counter")), "GET counter");
      check(2.5, jedis.incrByFloat(k("float"), 2.5), "INCRBYFLOAT");
      check(2.75, jedis.incrByFloat(k("float"), 0.25), "INCRBYFLOAT");
      try {
        jedis.incr(k("s1"));
        throw new AssertionError("INCR of a non-number succeeded");
      } catch (JedisDataException e) {
        checkThat(e.getMessage().contains("not an integer"), "INCR error: " + e.getMessage());
      }

      // Hashes.
      String h = k("hash");
      note(h, f("name"), v("name"), f("city"), v("city"), f("visits"));
      Map<String, String> fields = new LinkedHashMap<>();
      fields.put(f("name"), v("name"));
      fields.put(f("city"), v("city"));
      check(2L, jedis.hset(h, fields), "HSET");
      check(v("name"), jedis.hget(h, f("name")), "HGET");
      check(null, jedis.hget(h, f("nope")), "HGET missing");
      check(3L, jedis.hincrBy(h, f("visits"), 3), "HINCRBY");
      Map<String, String> all = new LinkedHashMap<>(fields);
      all.put(f("visits"), "3");
      check(all, jedis.hgetAll(h), "HGETALL");
      check(1L, jedis.hdel(h, f("city"), f("nope")), "HDEL");
      check(2L, jedis.hlen(h), "HLEN");
      check(1L, jedis.expire(h, 500), "EXPIRE");

      // A transaction.
      String ta = k("{" + tag + "}tx:a");
      String tc = k("{" + tag + "}tx:c");
      String th = k("{" + tag + "}tx:h");
      note(ta, v("tx"), tc, th, f("tx"), v("txfield"));
      Transaction t = jedis.multi();
      t.set(ta, v("tx"));
      t.incr(tc);
      t.hset(th, f("tx"), v("txfield"));
      t.get(ta);
      t.hget(th, f("tx"));
      t.incrBy(tc, 9);
      check(Arrays.asList("OK", 1L, 1L, v("tx"), v("txfield"), 10L), t.exec(), "EXEC");

      // A pipeline of 1,000 commands.
      Pipeline p = jedis.pipelined();
      List<Object> expected = new ArrayList<>();
      long sum = 0;
      for (int i = 0; i < PIPELINE_ROUNDS; i++) {
        String key = k("p:" + i);
        String value = "plain-pipe-" + prefix + i + "-" + "z".repeat(i % 37);
        note(key, value, f("p" + i));
        p.set(key, value);
        p.get(key);
        p.incrBy(k("p:sum"), i);
        p.hset(k("p:hash"), f("p" + i), value);
        sum += i;
        expected.addAll(Arrays.asList("OK", value, sum, 1L));
      }
      note(k("p:sum"), k("p:hash"));
      check(expected, p.syncAndReturnAll(), "pipeline of 1,000 commands");
      check(String.valueOf(sum), jedis.get(k("p:sum")), "GET p:sum");
      check((long) PIPELINE_ROUNDS, jedis.hlen(k("p:hash")), "HLEN p:hash");
      return resp;
    }
  }

  // -------------------------------------------------------------------------------------
  // Lettuce: RESP3 by default (HELLO 3 at connect), or RESP2; pipelining with the
  // asynchronous API and manual flushing.

  private String runLettuce(String host, int port, ProtocolVersion protocol) {
    RedisURI uri = RedisURI.Builder.redis(host, port).withDatabase(1)
        .withClientName("wl-lettuce").withTimeout(TIMEOUT).build();
    RedisClient client = RedisClient.create(uri);
    if (protocol != null) {
      client.setOptions(ClientOptions.builder().protocolVersion(protocol).build());
    }
    try (StatefulRedisConnection<String, String> conn = client.connect()) {
      RedisCommands<String, String> sync = conn.sync();
      check("PONG", sync.ping(), "PING");
      check("wl-lettuce", sync.clientGetname(), "CLIENT GETNAME");
      String resp = respOf(sync.clientInfo());

      // Strings with expiry.
      note(k("s1"), v("s1"), k("short"), v("short"), k("keep"), v("keep"));
      check("OK", sync.set(k("s1"), v("s1"), SetArgs.Builder.ex(100)), "SET EX");
      check(v("s1"), sync.get(k("s1")), "GET");
      long ttl = sync.ttl(k("s1"));
      checkThat(ttl > 0 && ttl <= 100, "TTL " + ttl);
      check(-2L, sync.ttl(k("missing")), "TTL of a missing key");
      check("OK", sync.set(k("short"), v("short"), SetArgs.Builder.px(150)), "SET PX");
      check("OK", sync.set(k("keep"), v("keep")), "SET");
      check(-1L, sync.ttl(k("keep")), "TTL without expiry");
      sleep(400);
      check(null, sync.get(k("short")), "a key set with PX 150 expired");
      String tag = prefix + "multi";
      String m1 = k("{" + tag + "}1");
      String m2 = k("{" + tag + "}2");
      String mx = k("{" + tag + "}missing");
      note(m1, m2, v("m1"), v("m2"), tag);
      Map<String, String> pairs = new LinkedHashMap<>();
      pairs.put(m1, v("m1"));
      pairs.put(m2, v("m2"));
      check("OK", sync.mset(pairs), "MSET");
      List<String> got = new ArrayList<>();
      for (KeyValue<String, String> kv : sync.mget(m1, mx, m2)) {
        got.add(kv.getValueOrElse(null));
      }
      check(Arrays.asList(v("m1"), null, v("m2")), got, "MGET");
      check(1L, sync.del(m1, mx), "DEL");

      // Counters.
      note(k("counter"), k("float"));
      check(1L, sync.incr(k("counter")), "INCR");
      check(42L, sync.incrby(k("counter"), 41), "INCRBY");
      check(41L, sync.decr(k("counter")), "DECR");
      check("41", sync.get(k("counter")), "GET counter");
      check(2.5, sync.incrbyfloat(k("float"), 2.5), "INCRBYFLOAT");
      check(2.75, sync.incrbyfloat(k("float"), 0.25), "INCRBYFLOAT");
      try {
        sync.incr(k("s1"));
        throw new AssertionError("INCR of a non-number succeeded");
      } catch (RedisCommandExecutionException e) {
        checkThat(e.getMessage().contains("not an integer"), "INCR error: " + e.getMessage());
      }

      // Hashes.
      String h = k("hash");
      note(h, f("name"), v("name"), f("city"), v("city"), f("visits"));
      Map<String, String> fields = new LinkedHashMap<>();
      fields.put(f("name"), v("name"));
      fields.put(f("city"), v("city"));
      check(2L, sync.hset(h, fields), "HSET");
      check(v("name"), sync.hget(h, f("name")), "HGET");
      check(null, sync.hget(h, f("nope")), "HGET missing");
      check(3L, sync.hincrby(h, f("visits"), 3), "HINCRBY");
      Map<String, String> all = new LinkedHashMap<>(fields);
      all.put(f("visits"), "3");
      check(all, sync.hgetall(h), "HGETALL");
      check(1L, sync.hdel(h, f("city"), f("nope")), "HDEL");
      check(2L, sync.hlen(h), "HLEN");
      check(true, sync.expire(h, 500), "EXPIRE");

      // A transaction.
      String ta = k("{" + tag + "}tx:a");
      String tc = k("{" + tag + "}tx:c");
      String th = k("{" + tag + "}tx:h");
      note(ta, v("tx"), tc, th, f("tx"), v("txfield"));
      check("OK", sync.multi(), "MULTI");
      sync.set(ta, v("tx"));
      sync.incr(tc);
      sync.hset(th, f("tx"), v("txfield"));
      sync.get(ta);
      sync.hget(th, f("tx"));
      sync.incrby(tc, 9);
      TransactionResult exec = sync.exec();
      checkThat(!exec.wasDiscarded(), "EXEC was discarded");
      List<Object> results = new ArrayList<>();
      exec.forEach(results::add);
      check(Arrays.asList("OK", 1L, true, v("tx"), v("txfield"), 10L), results, "EXEC");

      // A pipeline of 1,000 commands: queued without flushing, then written at once.
      RedisAsyncCommands<String, String> async = conn.async();
      List<RedisFuture<?>> futures = new ArrayList<>();
      List<Object> expected = new ArrayList<>();
      long sum = 0;
      conn.setAutoFlushCommands(false);
      try {
        for (int i = 0; i < PIPELINE_ROUNDS; i++) {
          String key = k("p:" + i);
          String value = "plain-pipe-" + prefix + i + "-" + "z".repeat(i % 37);
          note(key, value, f("p" + i));
          futures.add(async.set(key, value));
          futures.add(async.get(key));
          futures.add(async.incrby(k("p:sum"), i));
          futures.add(async.hset(k("p:hash"), f("p" + i), value));
          sum += i;
          expected.addAll(Arrays.asList("OK", value, sum, true));
        }
        conn.flushCommands();
        checkThat(LettuceFutures.awaitAll(TIMEOUT.toSeconds(), TimeUnit.SECONDS,
            futures.toArray(new RedisFuture[0])), "the pipeline did not complete in time");
      } finally {
        conn.setAutoFlushCommands(true);
      }
      List<Object> replies = new ArrayList<>();
      for (RedisFuture<?> future : futures) {
        replies.add(future.toCompletableFuture().join());
      }
      note(k("p:sum"), k("p:hash"));
      check(expected, replies, "pipeline of 1,000 commands");
      check(String.valueOf(sum), sync.get(k("p:sum")), "GET p:sum");
      check((long) PIPELINE_ROUNDS, sync.hlen(k("p:hash")), "HLEN p:hash");
      return resp;
    } finally {
      client.shutdown(Duration.ZERO, Duration.ofSeconds(5));
    }
  }

  // -------------------------------------------------------------------------------------

  private static String json(String text) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : text.toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }

  public static void main(String[] args) {
    if (args.length != 3) {
      System.err.println("usage: Workload {jedis-resp2|jedis-resp3|lettuce-resp3|lettuce-resp2}"
          + " HOST PORT");
      System.exit(2);
    }
    String variant = args[0];
    String host = args[1];
    int port = Integer.parseInt(args[2]);
    Workload w = new Workload(variant + ":");
    String client;
    String protocol;
    try {
      switch (variant) {
        case "jedis-resp2" -> {
          client = "jedis";
          protocol = w.runJedis(host, port, RedisProtocol.RESP2);
        }
        case "jedis-resp3" -> {
          client = "jedis";
          protocol = w.runJedis(host, port, RedisProtocol.RESP3);
        }
        case "lettuce-resp3" -> {
          client = "lettuce";
          protocol = w.runLettuce(host, port, null); // Lettuce's default: RESP3
        }
        case "lettuce-resp2" -> {
          client = "lettuce";
          protocol = w.runLettuce(host, port, ProtocolVersion.RESP2);
        }
        default -> {
          System.err.println("unknown variant " + variant);
          System.exit(2);
          return;
        }
      }
    } catch (Throwable e) { // a failed check or a client error: report it, exit 1
      System.err.println("workload " + variant + " failed: " + e);
      e.printStackTrace();
      System.exit(1);
      return;
    }
    StringBuilder out = new StringBuilder();
    out.append("{\"client\":").append(json(client))
        .append(",\"variant\":").append(json(variant))
        .append(",\"protocol\":").append(json(protocol))
        .append(",\"commands\":").append(4 * PIPELINE_ROUNDS)
        .append(",\"written\":[");
    String sep = "";
    for (String text : w.written) {
      out.append(sep).append(json(text));
      sep = ",";
    }
    out.append("]}");
    System.out.println(out);
    System.exit(0); // client libraries may leave non-daemon threads behind
  }
}
