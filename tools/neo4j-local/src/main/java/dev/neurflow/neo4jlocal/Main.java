package dev.neurflow.neo4jlocal;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.net.BindException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.connectors.ConnectorPortRegister;
import org.neo4j.configuration.connectors.ConnectorType;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.kernel.internal.GraphDatabaseAPI;
import org.neo4j.kernel.internal.Version;

/**
 * A real Neo4j Community DBMS in this JVM, reachable over Bolt on 127.0.0.1 only.
 *
 * <pre>
 *   NEO4J_PASSWORD=... java -Xmx512m -cp CLASSPATH dev.neurflow.neo4jlocal.Main --data DIR [--port N] [--pagecache 128m] [--ignore-stdin]
 * </pre>
 *
 * Authentication is on: the user {@code neo4j} gets the password in {@code NEO4J_PASSWORD}
 * (set on every start, so the variable always wins). HTTP and HTTPS are off. When Bolt accepts
 * connections it prints one line on stdout,
 * {@code {"neo4j_local":"ready","uri":"bolt://127.0.0.1:PORT","version":"5.26.x","database":"neo4j"}},
 * and nothing secret, ever. It stops cleanly on SIGTERM, SIGINT or when stdin closes (unless
 * {@code --ignore-stdin}). {@code --no-auth-lock} turns off the lock-out after 3 wrong passwords
 * (for test suites that try wrong passwords on purpose). Failures are one line on stderr starting with {@code neo4j-local:} and
 * a non-zero exit: 2 bad arguments or environment, 3 port taken, 4 data directory unusable,
 * 1 anything else (details in DIR/logs/debug.log).
 */
public final class Main {
    static final int EXIT_USAGE = 2;
    static final int EXIT_PORT = 3;
    static final int EXIT_DATA = 4;
    static final int EXIT_OTHER = 1;

    private static final String USAGE =
            "usage: NEO4J_PASSWORD=... neo4j-local --data DIR [--port N (0 = a free one; default 0)] "
                    + "[--pagecache SIZE (default 128m)] [--ignore-stdin] [--no-auth-lock]";

    private Main() {}

    static final class Failure extends Exception {
        final int code;

        Failure(int code, String message) {
            super(message);
            this.code = code;
        }
    }

    public static void main(String[] args) {
        PrintStream out = System.out;
        try {
            run(args, out);
            System.exit(0);
        } catch (Failure f) {
            System.err.println("neo4j-local: " + f.getMessage());
            System.exit(f.code);
        } catch (Throwable t) {
            System.err.println("neo4j-local: unexpected failure: " + oneLine(t));
            System.exit(EXIT_OTHER);
        }
    }

    private static void run(String[] args, PrintStream out) throws Exception {
        Path data = null;
        int port = 0;
        long pagecache = 128L << 20;
        boolean watchStdin = true;
        boolean authLock = true;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            switch (a) {
                case "--data" -> data = Path.of(value(args, ++i, a)).toAbsolutePath().normalize();
                case "--port" -> port = parsePort(value(args, ++i, a));
                case "--pagecache" -> pagecache = parseSize(value(args, ++i, a));
                case "--ignore-stdin" -> watchStdin = false;
                case "--no-auth-lock" -> authLock = false;
                case "-h", "--help" -> {
                    out.println(USAGE);
                    return;
                }
                default -> throw new Failure(EXIT_USAGE, "unknown argument " + a + "; " + USAGE);
            }
        }
        if (data == null) {
            throw new Failure(EXIT_USAGE, "--data DIR is required; " + USAGE);
        }
        String password = System.getenv("NEO4J_PASSWORD");
        if (password == null || password.length() < 8) {
            throw new Failure(EXIT_USAGE, "set NEO4J_PASSWORD (8 or more characters) to the password the user neo4j should have");
        }
        checkDataDir(data);
        if (watchStdin) {
            // from the start, so a parent that dies while Neo4j is still starting takes it down too
            Thread watcher = new Thread(() -> {
                try {
                    InputStream in = System.in;
                    byte[] buf = new byte[256];
                    while (in.read(buf) >= 0) {
                        // input is ignored; only its end matters
                    }
                } catch (IOException ignored) {
                    // a broken stdin counts as closed
                }
                System.exit(0);  // runs the shutdown hook once Neo4j is up; before that, just exits
            }, "neo4j-local-stdin");
            watcher.setDaemon(true);
            watcher.start();
        }

        DatabaseManagementService dbms = start(data, port, pagecache, authLock);
        CountDownLatch stopped = new CountDownLatch(1);
        Thread hook = new Thread(() -> {
            try {
                dbms.shutdown();
            } finally {
                stopped.countDown();
            }
        }, "neo4j-local-shutdown");
        Runtime.getRuntime().addShutdownHook(hook);

        try {
            setPassword(dbms, password);
            GraphDatabaseService db = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
            int bound = ((GraphDatabaseAPI) db).getDependencyResolver()
                    .resolveDependency(ConnectorPortRegister.class)
                    .getLocalAddress(ConnectorType.BOLT).getPort();
            out.println("{\"neo4j_local\":\"ready\",\"uri\":\"bolt://127.0.0.1:" + bound + "\",\"version\":\""
                    + Version.getNeo4jVersion() + "\",\"database\":\"" + GraphDatabaseSettings.DEFAULT_DATABASE_NAME + "\"}");
            out.flush();
        } catch (RuntimeException e) {
            throw new Failure(EXIT_OTHER, "started but could not finish setting up: " + oneLine(e));
        }

        stopped.await();  // SIGTERM/SIGINT or stdin EOF -> System.exit -> hook -> here (never returns normally)
    }

    private static DatabaseManagementService start(Path data, int port, long pagecache, boolean authLock)
            throws Failure {
        try {
            return new DatabaseManagementServiceBuilder(data)
                    .setConfig(BoltConnector.enabled, true)
                    .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
                    .setConfig(HttpConnector.enabled, false)
                    .setConfig(HttpsConnector.enabled, false)
                    .setConfig(GraphDatabaseSettings.auth_enabled, true)
                    // tests try wrong passwords on purpose; Neo4j would then lock the user out for 5 s
                    .setConfig(GraphDatabaseSettings.auth_max_failed_attempts, authLock ? 3 : 0)
                    .setConfig(GraphDatabaseSettings.pagecache_memory, pagecache)
                    .setConfig(GraphDatabaseSettings.pagecache_warmup_enabled, false)
                    .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                    .setConfig(GraphDatabaseSettings.preallocate_store_files, false)
                    .setConfig(GraphDatabaseSettings.udc_enabled, false)
                    .setConfig(GraphDatabaseInternalSettings.dump_diagnostics, false)  // seconds of start-up
                    // Bolt waits this long for connections and its worker threads at shutdown (5 s each by
                    // default); the clients are gone by then, so a second suffices
                    .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, Duration.ofSeconds(1))
                    .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, Duration.ofSeconds(1))
                    .build();
        } catch (Throwable t) {
            for (Throwable c = t; c != null; c = c.getCause()) {
                if (c instanceof BindException || c.getClass().getSimpleName().equals("PortBindException")) {
                    throw new Failure(EXIT_PORT, "cannot listen on 127.0.0.1:" + port
                            + ": the port is already in use (pick another with --port, or 0 for a free one)");
                }
                if (c.getClass().getSimpleName().equals("FileLockException")) {
                    throw new Failure(EXIT_DATA, "the data directory " + data
                            + " is in use by another Neo4j process; stop it or pick another --data");
                }
            }
            throw new Failure(EXIT_OTHER, "Neo4j did not start on " + data + ": " + oneLine(t)
                    + " (see " + data.resolve("logs").resolve("debug.log") + ")");
        }
    }

    /** Give the user neo4j the password from the environment (the embedded API runs with full rights). */
    private static void setPassword(DatabaseManagementService dbms, String password) {
        GraphDatabaseService system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        try {
            system.executeTransactionally("ALTER USER neo4j SET PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));
        } catch (RuntimeException e) {
            // a restart on the same data directory with the same password: nothing to change
            if (!String.valueOf(e.getMessage()).toLowerCase(Locale.ROOT).contains("cannot be the same")) {
                throw new RuntimeException("setting the password of user neo4j failed: "
                        + oneLine(e).replace(password, "***"));
            }
        }
    }

    private static void checkDataDir(Path data) throws Failure {
        try {
            Files.createDirectories(data);
        } catch (IOException | SecurityException e) {
            throw new Failure(EXIT_DATA, "cannot create the data directory " + data + ": " + oneLine(e));
        }
        if (!Files.isDirectory(data) || !Files.isWritable(data)) {
            throw new Failure(EXIT_DATA, "the data directory " + data + " is not a writable directory");
        }
        try {
            Path probe = Files.createTempFile(data, ".neo4j-local-probe", "");
            Files.delete(probe);
        } catch (IOException | SecurityException e) {
            throw new Failure(EXIT_DATA, "cannot write in the data directory " + data + ": " + oneLine(e));
        }
    }

    private static String value(String[] args, int i, String name) throws Failure {
        if (i >= args.length) {
            throw new Failure(EXIT_USAGE, name + " needs a value; " + USAGE);
        }
        return args[i];
    }

    private static int parsePort(String s) throws Failure {
        try {
            int p = Integer.parseInt(s);
            if (p >= 0 && p <= 65535) {
                return p;
            }
        } catch (NumberFormatException ignored) {
            // fall through
        }
        throw new Failure(EXIT_USAGE, "--port " + s + " is not a port number (0-65535)");
    }

    static long parseSize(String s) throws Failure {
        String t = s.trim().toLowerCase(Locale.ROOT);
        long mult = 1;
        if (t.endsWith("k")) {
            mult = 1L << 10;
        } else if (t.endsWith("m")) {
            mult = 1L << 20;
        } else if (t.endsWith("g")) {
            mult = 1L << 30;
        }
        if (mult != 1) {
            t = t.substring(0, t.length() - 1);
        }
        try {
            long v = Long.parseLong(t) * mult;
            if (v >= (8L << 20)) {
                return v;
            }
        } catch (NumberFormatException ignored) {
            // fall through
        }
        throw new Failure(EXIT_USAGE, "--pagecache " + s + " is not a size of at least 8m (e.g. 128m, 1g)");
    }

    private static String oneLine(Throwable t) {
        Throwable root = t;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        String msg = root.getMessage() == null ? root.getClass().getSimpleName() : root.getMessage();
        return msg.replaceAll("\\s+", " ").trim();
    }
}
