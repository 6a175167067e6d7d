// Package push sends push notifications (spec.md section 19) through
// Apple's APNs (APNs, with github.com/sideshow/apns2 and token
// authentication), Firebase Cloud Messaging's HTTP v1 API (FCM, a
// service-account key through golang.org/x/oauth2) and plain HTTPS POSTs
// to UnifiedPush-compatible endpoints (Webhook, with a signed body). A
// Dispatcher implements storage.Pusher on top of them.
//
// The shards decide: when an entry that wakes is durable for a device that
// has a token and no connection, the shard hands the Dispatcher a
// storage.PushJob carrying the device's count so far. The Dispatcher sends:
//
//	PushDue ──▶ pending, one per device ──▶ timer at NotBefore ──▶ workers
//	  (a newer job replaces a waiting one:        │
//	   coalescing in memory too)                  ▼
//	                                 Provider.Send (AttemptTimeout)
//	                                   taken          → OpPushDone Sent
//	                                   token invalid  → OpPushDone TokenInvalid
//	                                   throttled/down → again after backoff or
//	                                                    Retry-After, up to Attempts
//	                                   rejected, or
//	                                   out of attempts → OpPushDone Failed
//
// Every OpPushDone carries the end of the device's interval (now +
// Interval), before which the shard owes it no other push; the shard
// hands the job back when more came meanwhile, or after a failure, so a
// device gets at most one push per Interval, and a failing provider is
// tried again each Interval. A job that arrives while the device's push is
// being sent is dropped: the shard hands it back after that push's
// OpPushDone. Pending jobs are bounded (Queue): beyond, a job is dropped and
// counted; its record stays owed on the shard and goes out with the
// device's next entry or at the next start.
//
// Credentials (the APNs .p8 key, the FCM service-account key, the webhook
// secret) are never logged, nor put in errors; tokens are logged only as
// a short prefix.
//
// Threading: a Dispatcher's methods are safe for concurrent use and never
// block (Close aside); sends run on its worker goroutines, timers on the
// Clock's. Providers are immutable once built and safe for concurrent
// use.
package push
