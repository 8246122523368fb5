// Package sparkplug makes the gateway a Sparkplug B 3.0 edge node (Eclipse
// Sparkplug specification 3.0.0, chapters 4 to 6).
//
// Mapping: the group id is configured (the gateway's default is the site),
// the edge node id is the gateway id, every model asset is a device (its
// path below the configured prefix, levels joined with '.'), every tag a
// metric named by its path inside the asset (speed, counters/good).
//
// The Fanout encodes each point once with Encoder: the metric's datatype
// and the fields that do not depend on the session (timestamp, value or
// is_null, the Quality property). The Sink adds the alias or name and
// is_historical when it sends, and keeps the session state the
// specification asks for: bdSeq in the Will and the NBIRTH, persisted across
// restarts; one seq counter for NBIRTH, DBIRTH, NDATA, DDATA and DDEATH;
// aliases stable across restarts; births with the newest value of every
// metric; rebirth on NCMD; waiting for the primary host's STATE; DDEATH
// when a device's source goes down and DBIRTH when it returns; NDEATH on a
// clean stop.
//
// It imports publish and model only.
package sparkplug
