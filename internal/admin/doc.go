// Package admin is a node's operator endpoint: Prometheus metrics at
// /metrics, Go's profiler at /debug/pprof/, the process's memory at
// /debug/memory, and the latest user reports at /reports (spec.md section
// 18.5). It is meant for a loopback or otherwise private address: it has
// no authentication, the profiler can slow the node down, and the reports
// hold what users revealed of their conversations.
//
// The metrics are read at scrape time from the counters the server, the
// shards, the media service and the SMS sender already keep (server.Stats,
// storage.Shard.Stats, media.Service.Stats, sms.Sender.Stats), so the message
// path pays nothing for them; the one exception is Commits, a histogram the
// shards feed through storage.Config.OnCommit.
//
// Threading: Commits.Observe may be called from any goroutine (every shard
// actor calls it). An Admin's methods are safe for concurrent use.
package admin
