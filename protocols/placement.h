// Decrypting a message's payload straight into the buffer that will use it.
//
// A received WeightsChunk's payload belongs at an offset of an update being assembled
// (codec.h ChunkAssembler). Without placement, TLS decrypts the whole message into a buffer of
// its own and the assembler copies the payload out of it. With a payload placer installed
// (SecureSession::set_payload_placer, and the channels above it), the session decrypts a
// message's head first (the codec frame up to its payload), asks the placer where the payload
// goes, and decrypts the payload there; the message is then delivered as its head, with a view
// of the placed payload (Plaintext).
//
// Lifetime. The receiver may drop or restart the transfer while a placed payload is still
// being decrypted (a round ends, a worker is dropped): `owner` keeps the destination allocated
// until the session is done writing and the delivered message is gone, so nothing is ever
// written into freed memory. The receiver must then refuse the stale delivery (ChunkAssembler
// accepts a placed payload only from the transfer and at the chunk that placed it).
//
// Delivery. A placed payload counts only once its message is delivered, in order with the
// session's other messages. A message cut short, or a session that fails part-way (a tampered
// record), may leave bytes in the destination that are never delivered: the receiver's chunk
// at that place stays unaccepted.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "protocols/framing.h"

namespace shoal::protocols {

// Where a payload goes: `data` has room for all of it; null = keep it in the message.
struct PayloadPlacement {
  char* data = nullptr;
  std::shared_ptr<void> owner;  // keeps `data` allocated
};

// One received application message.
struct Plaintext {
  std::string bytes;  // the message; only its head when `placed`
  bool placed = false;
  std::string_view payload;     // when placed: the payload, where the placer put it
  std::shared_ptr<void> owner;  // when placed: keeps `payload` allocated

  // The whole message in one string (a copy of the payload when it was placed).
  std::string Join() && { return placed ? protocols::Join(bytes, payload) : std::move(bytes); }
};

}  // namespace shoal::protocols
