// Decodes Sparkplug B payloads with the Eclipse Tahu JavaScript package
// (npm sparkplug-payload, pinned in package-lock.json) for unsgate's
// interop test (publish/sparkplug/interop_test.go).
//
// stdin:  a JSON array of {"topic": "...", "payload_b64": "..."}
// stdout: a JSON array, one element per input element, in order:
//         {"topic": "...", "decoded": {...}} or {"topic": "...", "error": "..."}
//
// It uses Tahu's raw protobuf module, not the high-level decodePayload:
// that one returns value null for DATA metrics without a datatype. With
// longs: String every 64-bit field (timestamp, seq, alias, longValue) is a
// decimal string, so nothing is rounded through a JavaScript number; with
// oneofs: true each metric says which value field it carried ("value");
// with defaults: false absent fields stay absent.
'use strict';

const Payload = require('sparkplug-payload/lib/sparkplugPayloadProto').org.eclipse.tahu.protobuf.Payload;

function decodeOne(item) {
	const topic = item && typeof item.topic === 'string' ? item.topic : '';
	try {
		if (!item || typeof item.payload_b64 !== 'string') {
			throw new Error('payload_b64 missing');
		}
		const buf = Buffer.from(item.payload_b64, 'base64');
		const decoded = Payload.toObject(Payload.decode(buf), { longs: String, oneofs: true, defaults: false });
		return { topic, decoded };
	} catch (err) {
		// Reported, never swallowed: the test fails on it.
		return { topic, error: String(err && err.message ? err.message : err) };
	}
}

function main(input) {
	let items;
	try {
		items = JSON.parse(input);
	} catch (err) {
		process.stderr.write('decode.js: stdin is not JSON: ' + err.message + '\n');
		process.exit(2);
	}
	if (!Array.isArray(items)) {
		process.stderr.write('decode.js: stdin must be a JSON array of {"topic", "payload_b64"}\n');
		process.exit(2);
	}
	process.stdout.write(JSON.stringify(items.map(decodeOne)) + '\n');
}

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => main(Buffer.concat(chunks).toString('utf8')));
