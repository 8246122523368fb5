// node-opcua server for unsgate's OPC UA interop tests
// (connectors/opcua/interop_test.go). An independent implementation, so the
// gateway's security (certificate trust both ways, user names) is tested
// against a server that really checks them, unlike gopcua's test server.
//
//   node server.js --port PORT --dir DIR [--accept-unknown]
//                  [--policies Basic256Sha256,...] [--modes SignAndEncrypt,...]
//
// DIR holds the server's PKI (DIR/pki: own/, trusted/certs, rejected/ ...)
// and user PKI (DIR/userpki), so nothing is written under $HOME. Reusing DIR
// across runs skips the key generation (first start ~6 s, later ~2 s).
// The server writes its certificate to DIR/server_cert.der, listens on
// 127.0.0.1:PORT, accepts the user operator/secret only (no anonymous
// sessions), and prints one line "READY <endpoint url>" on stdout when it
// serves. --accept-unknown accepts any client certificate; without it an
// unknown client certificate is refused (and lands in DIR/pki/rejected).
// Commands on stdin: "trust-rejected" trusts the refused client
// certificates and answers "TRUSTED <n>". Closing stdin stops the server.
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");
const {
    OPCUAServer,
    OPCUACertificateManager,
    DataType,
    SecurityPolicy,
    MessageSecurityMode,
} = require("node-opcua");

function parseArgs(argv) {
    const args = { port: 0, dir: "", acceptUnknown: false, policies: "Basic256Sha256", modes: "SignAndEncrypt" };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
            return argv[++i];
        };
        switch (a) {
            case "--port": args.port = parseInt(next(), 10); break;
            case "--dir": args.dir = next(); break;
            case "--accept-unknown": args.acceptUnknown = true; break;
            case "--policies": args.policies = next(); break;
            case "--modes": args.modes = next(); break;
            default: throw new Error(`unknown argument ${a}`);
        }
    }
    if (!args.port || !args.dir) throw new Error("usage: node server.js --port PORT --dir DIR [--accept-unknown]");
    return args;
}

function enumValues(list, table, what) {
    return list.split(",").filter(Boolean).map((name) => {
        if (table[name] === undefined) throw new Error(`unknown ${what} ${name}`);
        return table[name];
    });
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    fs.mkdirSync(args.dir, { recursive: true });

    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(args.dir, "pki"),
        automaticallyAcceptUnknownCertificate: args.acceptUnknown,
    });
    const userCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(args.dir, "userpki"),
        automaticallyAcceptUnknownCertificate: false,
    });

    const server = new OPCUAServer({
        port: args.port,
        host: "127.0.0.1",
        hostname: "127.0.0.1",
        resourcePath: "/UA/unsgate",
        serverCertificateManager,
        userCertificateManager,
        securityPolicies: enumValues(args.policies, SecurityPolicy, "security policy"),
        securityModes: enumValues(args.modes, MessageSecurityMode, "security mode"),
        allowAnonymous: false,
        userManager: {
            isValidUser: (user, password) => user === "operator" && password === "secret",
        },
        serverInfo: { applicationUri: "urn:unsgate:interop:node-opcua" },
        buildInfo: { productName: "unsgate-interop-node-opcua" },
    });
    await server.initialize();

    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace("urn:unsgate:interop");
    const line = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Line2" });
    const filler = ns.addObject({ organizedBy: line, browseName: "Filler1" });
    const variable = (name, dataType, value, extra) =>
        ns.addVariable({
            componentOf: filler,
            browseName: name,
            nodeId: `s=Line2.Filler1.${name}`,
            dataType,
            // Measured values: read only (browse shows "read").
            accessLevel: "CurrentRead",
            userAccessLevel: "CurrentRead",
            value: { dataType: DataType[dataType], value },
            ...extra,
        });
    const speed = variable("Speed", "Double", 0.0);
    const count = variable("Count", "Int32", 0);
    const running = variable("Running", "Boolean", false);
    const recipe = variable("Recipe", "String", "r0");
    const temps = variable("Temperatures", "Double", new Float64Array([20, 21, 22]), { valueRank: 1, arrayDimensions: [3] });
    // Writable, so browse shows read/write access.
    const setpoint = ns.addVariable({
        componentOf: filler,
        browseName: "Setpoint",
        nodeId: "s=Line2.Filler1.Setpoint",
        dataType: "Double",
        accessLevel: "CurrentRead | CurrentWrite",
        userAccessLevel: "CurrentRead | CurrentWrite",
        value: { dataType: DataType.Double, value: 42.5 },
    });
    void setpoint;

    let n = 0;
    const timer = setInterval(() => {
        n++;
        // setValueFromSource moves the source timestamp with each value.
        speed.setValueFromSource({ dataType: DataType.Double, value: 100 + n / 10 });
        count.setValueFromSource({ dataType: DataType.Int32, value: n });
        running.setValueFromSource({ dataType: DataType.Boolean, value: n % 2 === 0 });
        recipe.setValueFromSource({ dataType: DataType.String, value: `r${n}` });
        temps.setValueFromSource({ dataType: DataType.Double, arrayType: 1, value: new Float64Array([20 + n, 21 + n, 22 + n]) });
    }, 100);

    await server.start();
    fs.writeFileSync(path.join(args.dir, "server_cert.der"), server.getCertificate());
    const url = `opc.tcp://127.0.0.1:${args.port}/UA/unsgate`;
    process.stdout.write(`READY ${url}\n`);

    const stop = async () => {
        clearInterval(timer);
        try {
            await server.shutdown(0);
        } finally {
            process.exit(0);
        }
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    // Commands from the test, one per line on stdin; the test owns this
    // process, so stdin closing stops it.
    const commands = readline.createInterface({ input: process.stdin });
    commands.on("line", (line) => {
        if (line.trim() === "trust-rejected") {
            // What an administrator does: trust the client certificates the
            // server refused (moves them from pki/rejected to pki/trusted).
            trustRejected(serverCertificateManager, path.join(args.dir, "pki", "rejected")).then(
                (n) => process.stdout.write(`TRUSTED ${n}\n`),
                (err) => process.stdout.write(`ERROR ${err && err.message}\n`),
            );
        } else {
            process.stdout.write(`ERROR unknown command ${line}\n`);
        }
    });
    commands.on("close", stop);
}

async function trustRejected(manager, dir) {
    let n = 0;
    for (const name of fs.readdirSync(dir)) {
        const pem = fs.readFileSync(path.join(dir, name), "utf8");
        const m = /-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/.exec(pem);
        if (!m) continue;
        await manager.trustCertificate(Buffer.from(m[1].replace(/\s+/g, ""), "base64"));
        n++;
    }
    return n;
}

main().catch((err) => {
    process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});
