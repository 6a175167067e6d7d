// Command parley is a terminal client for Parley: register a phone number
// or link this machine to an account, look up contacts, send messages and
// files to people and groups, listen for messages, or chat.
//
//	parley register --server HOST:PORT --fingerprint HEX --phone +15551234567
//	parley lookup +15557654321
//	parley send --to +15557654321 see you at eight
//	parley send-file --group hike route.gpx
//	parley listen
//	parley chat --to +15557654321
//	parley chat --group hike
//	parley group create hike +15557654321 +447700900123
//	parley link --server HOST:PORT --fingerprint HEX   (then, on the phone: parley approve CODE)
//
// register and link store the device's credentials and the server's
// address in a profile (os.UserConfigDir()/parley/<profile>.json, --profile
// to keep several on one machine); later commands need no server flags.
// The profile also remembers the phone numbers looked up, the names of
// the groups seen, and the files received (for save-file, the last 64).
// The environment variables PARLEY_SERVER, PARLEY_FINGERPRINT and
// PARLEY_PROFILE are the defaults of --server, --fingerprint and
// --profile. Bad input exits with status 2 and one line on stderr;
// failures exit with status 1.
//
// People are shown by the phone numbers the profile knows (looked up,
// or given to send, chat or group), "You" for this account, and
// "user ID" otherwise: the protocol never tells a number from an id.
// Groups are shown as "#name".
//
// # End-to-end encryption
//
// Every message is encrypted end to end (spec.md section 17) with the
// Signal protocol (go.mau.fi/libsignal): once for each device of the
// recipient and each other device of this account, or, in a group, once
// with this device's sender key, which it first hands to every member's
// devices. The keys, sessions and identities seen live in the profile,
// which is therefore private (mode 0600). register and link publish the
// new device's keys at once, so others can write to it. listen and chat
// say when a contact's security code changed (the contact added or lost
// a device, or registered again); parley verify --to NUMBER prints the
// 60-digit code, which both people compare out of band. A message that
// was not encrypted (from a client that brings no encryption) is marked
// so; one this device cannot decrypt is shown as such.
//
// In chat, /react, /reply, /forward, /edit and /delete (for everyone),
// /timer (disappearing messages), /block, /unblock and /report use the
// conversation controls (spec.md section 18); chat and listen show a
// reply under a quote of its message, an edit with an "edited" mark, the
// reactions a message has under it, forwards, deletions, and when a
// disappearing message goes; one that has gone by the time it arrives is
// never shown (spec.md [S-18-10]).
//
// In chat, parley shows when the other person is online or was last seen,
// and when they are typing; it tells them when you are. On a Linux
// terminal it reads keys as they are typed to do so (it edits the line
// itself: backspace, Ctrl-U, Ctrl-W; Ctrl-D on an empty line leaves),
// and who is typing shows in brackets before the line being typed until
// they stop; elsewhere it sees a line only once Enter is pressed, and
// prints "… is typing…" and "… stopped typing". A message that belongs
// to another conversation (a private message while a group is open, a
// message of another group) is shown marked "(not in this chat)". Each
// message you send gets a line whenever its mark changes: "✓ sent",
// "✓✓ delivered" (a device of theirs has it), "✓✓ read"; in a group the
// counts, "✓✓ 3/5 delivered, 1/5 read". A line starting with "/" is a
// command, never sent: /send-file PATH, /save SEQ PATH, /approve CODE,
// /help, /quit ("//" sends a line starting with "/"). Those commands are
// there because the chat holds the profile: another parley command on
// it is refused until the chat ends.
//
// listen and chat keep trying to reach the server after the connection
// is lost, with a random delay that starts under half a second and
// doubles up to 5 seconds (one person waits at the terminal; spec.md
// [S-6-13] recommends a slower bound for fleets of devices); they say
// once that the connection is lost and once that it is back (-v: every
// attempt). The other commands give up at once when nothing answers at
// the server's address; a message being sent then stays queued in the
// profile and goes out with the next command. Sizes are in IEC units
// (1 KiB = 1024 bytes).
//
// # Files
//
// send-file encrypts the file with a key of its own, uploads the
// ciphertext through the server's media endpoint (spec.md section 14), and
// sends an ordinary message, itself encrypted end to end like any other,
// whose content type says image, video, voice or document (by the file's
// MIME type; document when the file is over the type's limit) and whose
// body is this JSON object: the file's key thus travels only inside the
// end-to-end encrypted message, and the server sees neither:
//
//	{
//	  "v": 1,                  layout version
//	  "id": "3f9a2c71…",       media id, 32 hex digits
//	  "key": "Wm9v…",          AES-256 key, 32 bytes, unpadded base64url
//	  "size": 245824,          bytes of ciphertext, as uploaded
//	  "sha256": "69f2db1d…",   SHA-256 of the ciphertext, 64 hex digits
//	  "name": "route.gpx",     the file's name, without directories
//	  "mime": "application/gpx+xml"
//	}
//
// The ciphertext is the file cut into chunks of 65536 bytes (the last
// may be shorter, or empty for an empty file), each sealed on its own
// with AES-256-GCM under the key, which is drawn at random for each file.
// Chunk i (from 0) has the 12-byte nonce made of i as an 8-byte
// big-endian number, three zero bytes, and a byte that is 1 for the last
// chunk and 0 otherwise; there is no additional data. Each sealed chunk
// is its plaintext followed by the 16-byte tag, so the ciphertext is
// 16 bytes per chunk longer than the file, and it cannot be reordered,
// cut short or extended without failing to open.
//
// save-file (or /save in chat) asks the server for a download URL,
// downloads the ciphertext, checks that its size and SHA-256 are both
// what the server announced and what the sender's message says, decrypts
// it, and only then puts the file in place. It never replaces an
// existing file.
//
// The protocol logic lives in package client; this command turns flags
// into a client.Config and calls, and events into lines of text.
package main
