// Package client is Parley's Go client SDK: it registers a device (or
// links a companion device), keeps one logged-in connection to the server
// alive, delivers the device's inbox in order and without repeats, and
// sends messages, to users and groups, that survive reconnects and
// restarts. It also manages groups, presence and typing indicators, the
// account's devices, and media transfers. The command-line client, the
// load generator and the end-to-end tests are built on it.
//
// # Use
//
//	creds, err := client.Verify(ctx, cfg, phone, code, "laptop") // after RequestCode
//	store.SaveCredentials(creds)
//	c, err := client.New(cfg, creds, store)
//	go c.Run(ctx)                       // connect, log in, reconnect forever
//	for ev := range c.Events() { … }    // Message, Receipt, Synced, Connected, …
//	sent, err := c.Send(ctx, to, body, pb.ContentType_CONTENT_TEXT)
//	c.Close()
//
// Groups (spec section 16): CreateGroup, AddGroupMembers and the other
// updates, Group, Groups; SendGroup and MarkGroupRead. Group messages,
// group changes and coalesced group receipts arrive as Message (Group
// set), GroupEvent and Receipts events; GroupInfo.Apply keeps a group's
// state from its events.
//
// Presence and typing (section 15): Subscribe (the client subscribes
// again after every reconnect), SetPrivacy, Typing and GroupTyping; the
// server's PRESENCE and IS_TYPING frames are Presence and IsTyping events.
//
// Linked devices (section 9): on the new device, RequestLink shows a code
// and PendingLink.Wait yields its Credentials once the primary device
// calls ApproveLink; Devices and RevokeDevice manage the account's
// devices. Copies of messages sent from this user's other devices arrive
// as Message events with To set, and reads made there as Receipt events
// of type RECEIPT_SELF_READ.
//
// Conversation controls (section 18): Revoke and RevokeGroup delete a
// message for everyone; the deletions arrive as Revoked events. Block,
// Unblock and BlockList manage the account's block list; the account's
// devices follow it by Blocked events. SetTimer and SetGroupTimer set a
// conversation's disappearing-message timer (TimerChanged events);
// Message.Expires says when a disappearing message goes. Draft and
// SendDraft send reactions, replies, edits and forwards (Message.Ref,
// Forwarded); Report reports a user to the operator.
//
// Push notifications (section 19): a mobile app calls RegisterPush with
// the token its platform gave it (APNs, FCM, or a UnifiedPush endpoint)
// whenever that token changes, and UnregisterPush to stop them; the push
// only wakes the app, which then connects and reads its inbox as usual.
//
// Media (section 14): a Client is a MediaRequester, so
// Media{Requester: c, HTTP: …} uploads and downloads over its connection.
//
// # What the client does for the application
//
//   - Connects over TLS 1.3 (pinned certificate fingerprint or a CA pool;
//     spec [S-5-4]), logs in with the cursor kept in the Store, and
//     pipelines the sends and requests still unanswered right behind Login
//     ([S-6-3]; at most 128 KiB before LoginOk, [S-6-14]). LoginOk.cursor
//     becomes the cursor ([S-8-7]).
//   - Reconnects after any failure with exponential backoff and full
//     jitter (1 s doubling to 60 s, reset after a minute logged in;
//     [S-6-13]), or, after GoAway, once reconnect_after_ms has passed
//     ([S-6-10]); frames after GoAway are still processed. Stops for good
//     on UNSUPPORTED_VERSION, AUTH_FAILED, DEVICE_REVOKED and
//     SESSION_REPLACED (a Fatal event; Run returns the error).
//   - Inbox: entries (Message, Receipt, Receipts, GroupEvent, also inside
//     compressed Batch frames) are delivered in seq order; an entry at or below the cursor
//     is dropped (but still acknowledged). Acks are cumulative and
//     coalesced for up to Config.AckDelay (Config.LazyAckDelay, 1 s,
//     while they would newly cover no one-to-one message from another
//     user); one goes out at once when it
//     covers a quarter of the server's window, when the window is full,
//     or when a Batch or the login backlog has been delivered, and acks
//     ride along with any other frame. The cursor is saved in the Store
//     before the Ack that covers it is written.
//   - Outbox: every send gets the next cmid of a per-device counter kept in
//     the Store, is stored before it is written, is resent identically
//     after each reconnect until SENT (the server deduplicates), is retried
//     after RATE_LIMITED, OVERLOADED, INTERNAL and the other codes that say
//     so, and reports its outcome exactly once ([S-8-11], [S-8-14]). A
//     conversation's sends go out in cmid order, also across retries: a
//     send waiting for its retry, or being encrypted again after
//     DEVICES_CHANGED, holds back the later sends to the same user or
//     group ([S-8-13], send_order.go); one given up after DEVICES_CHANGED
//     ends its connection, where the server would go on holding them back
//     ([S-17-9]). At most Config.MaxInFlight sends
//     and requests are unanswered on a connection ([S-6-14]).
//   - Requests (READ, LOOKUP, the group, presence, device and media
//     requests) are matched to their answers by rid, written again with a
//     new rid after a reconnect, and retried after RATE_LIMITED,
//     OVERLOADED and INTERNAL. The few that must not be carried out twice
//     (CreateGroup, RemoveGroupMembers, LeaveGroup, ApproveLink,
//     RevokeDevice) are written only once logged in, and fail with
//     ErrNoAnswer instead of being repeated when the connection is lost
//     before their answer.
//   - Entries of a kind or enum value this version does not know are
//     acknowledged without an event ([S-12-5]); frames of unknown kinds
//     are skipped ([S-12-4]).
//   - Liveness ([S-6-8]): Ping when nothing was written or read for three
//     quarters of the server's heartbeat; a connection that delivers no
//     byte within 15 s after a Ping is dropped as dead (half-open TCP).
//
// # Threading
//
// Every method of Client is safe for concurrent use. A Client runs these
// goroutines: Run's, which dials and then reads the connection; a writer,
// started on demand when frames are due and gone when they are written; a
// dispatcher, started on demand when events are queued and gone when they
// are delivered; a sealer, while a send queued before the client connected
// is being encrypted (send_seal.go); and timers (Config.Clock.AfterFunc). An idle connected
// client therefore has one goroutine. The reader never waits for the
// application: Send, MarkRead, Lookup and the other requests complete
// while events wait, so they may be called from Config.OnEvent. Events and SendAsync callbacks
// are delivered by the dispatcher, one at a time, in order; Config.OnRetry
// is called by the reader, which waits for it. Close waits for
// every goroutine; it must not be called from OnEvent or a callback.
//
// Client.mu guards all mutable state of the client and its sessions. It is
// the client's only lock; it is never held during network or Store I/O or
// while calling the application (OnEvent, Events, callbacks, OnRetry). Config.Clock
// and Config.Rand are called with it held and must not call the Client.
// Store methods may be called concurrently; Store implementations lock for
// themselves.
//
// # Tests
//
// Config.Dial, Config.Clock and Config.Rand make the client deterministic
// enough to drive from tests: a dialer can count attempts or return
// failing connections, a manual clock fires heartbeats and backoff
// without sleeping, and a fixed Rand pins the jitter. Config.Plaintext
// lets a test server speak frames without TLS.
package client
