// Package sms sends verification codes through an SMS gateway over HTTP:
// a Twilio-compatible Messages API (Twilio) or a webhook with a signed
// body (Webhook). A Sender implements storage.CodeSender on top of either
// gateway: it queues each code, hands it to the gateway with retries, and
// reports what became of it, so that the shard answers the client's
// REQUEST_CODE with CODE_SENT or with a clear error (spec.md [S-9-16]).
//
// What a send does:
//
//	SendCode ──▶ bounded queue ──▶ one of Workers goroutines
//	   │ full or closed: done(err) at once       │
//	   ▼                                         ▼
//	 never blocks              attempt (Gateway.Send, AttemptTimeout)
//	                             taken        → done(nil)
//	                             refused      → done(ErrCodeUndeliverable…)
//	                             rejected     → done(err)  (configuration)
//	                             unavailable  → backoff with jitter, again,
//	                                            up to Attempts and Deadline
//
// Failures are classified by the gateway's answer: a number the gateway
// refuses is final for that number; an answer that says the server is
// misconfigured (bad credentials, a bad sender) is final for the attempt
// and logged as an error; throttling (429), server errors (5xx), network
// errors and timeouts are retried. Credentials never appear in logs or
// errors, and neither do codes or message texts.
//
// Threading: a Sender's methods are safe for concurrent use. SendCode
// never blocks; it calls done either at once on its caller's goroutine
// (queue full, Sender closed) or later on a worker goroutine. Twilio and
// Webhook are immutable once built and safe for concurrent use. Close
// stops the workers; it must not be called from a done callback.
package sms
