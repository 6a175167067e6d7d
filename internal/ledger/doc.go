// Package ledger keeps the books of one flow of messages: the client
// message ids (cmids) the sender holds SENT for, the ones the receiver
// got, and what a delivery shows (new, a second copy, out of order). At
// the end, a cmid acknowledged and never received is lost.
//
// The load tester (loadtest) keeps one Flow per device pair and the end-to-end
// test harness (internal/nodetest) one per sending device, conversation and
// receiving device, so the two check deliveries the same way.
//
// Cmids are small integers from a per-device counter ([S-8-11]), so a Flow
// keeps them in growable bit sets: two bits per cmid, no allocation per
// message once the sets have grown.
//
// Threading: a Flow's methods are safe for concurrent use (the sender's
// reader records acknowledgements while the receiver's records deliveries).
package ledger
