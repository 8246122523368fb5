// Package kafka is the Kafka sink: it takes encoded UNS messages from its
// publish.Queue and produces each tag value as one record to a few fixed
// topics (default uns.v1.values, or the topic of the first matching route),
// keyed by the UNS path so that one tag always lands in one partition
// (Java-compatible murmur2 through franz-go's sticky key partitioner), with
// an idempotent producer and acks=all. An optional state topic receives the
// same record, for a compacted "latest value per tag" view.
//
// The Kafka client is franz-go (kgo). It keeps many records in flight,
// batches them per partition (linger, batch bytes, compression) and retries
// transient failures without limit, so records are never failed by a retry
// count or a delivery timeout. A record the client does fail anyway (the
// topic does not exist, the client is closed) goes back to the queue, in
// its original order; one the broker refuses for good (too large, not
// authorized) is counted as rejected.
//
// It must not encode payloads (the fan-out does, once for all sinks), must
// not modify them (they are shared with the other sinks), must not create
// topics, and sends only tag values: _meta and other messages without a tag
// are MQTT matters and are skipped here.
package kafka
