// Package mqtt is the MQTT v5 sink: it takes encoded UNS messages from its
// publish.Queue and publishes them to a broker with QoS 1 and retain,
// keeping a window of publishes in flight, plus the gateway's presence and
// each tag's retained _meta. Connection management (dial, CONNECT,
// keep-alive, reconnect with backoff) is paho's autopaho; the sink writes
// PUBLISH packets itself through its own session state, so it can count a
// message as sent only on its PUBACK and resend what a lost connection had
// in flight.
//
// It must not encode payloads (the fan-out does, once for all sinks), must
// not block the fan-out, and must never count a message as sent that the
// broker did not acknowledge. The one exception is a broker that cannot
// do QoS 1 (CONNACK Maximum QoS 0): there is no acknowledgement to wait
// for, so on such a connection "sent" means "written to the socket", and
// a message the broker then loses is lost silently. The sink warns about
// such a broker when it connects.
package mqtt
