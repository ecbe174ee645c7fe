// One synthetic worker's connection to the coordinator: a ZeroMQ STREAM socket speaking
// Shoal's framed transport (protocols/framing.h: greeting, then length-prefixed frames) and,
// given a TLS context, TLS 1.3 with the worker's own certificate exactly as a real worker does
// (protocols/channel.h's ClientChannel: SecureSession::Start in Connect, Seal in Send, OnWire
// in Receive, messages queued until the handshake is done), behind the smallest interface the
// load generator needs.
//
// Unlike protocols/transport.h (one socket, blocking receive with a timeout), a Link exposes
// its socket's notification descriptor so one thread can epoll thousands of them, and Receive
// never blocks.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "base/status.h"
#include "protocols/framing.h"
#include "protocols/secure_channel.h"

namespace shoal::loadgen {

class Link {
 public:
  // A new STREAM socket; Unavailable when ZeroMQ cannot make one (ZMQ_MAX_SOCKETS, EMFILE).
  // `tls` null = plain (the coordinator must run --insecure).
  static Result<std::unique_ptr<Link>> Create(zmq::context_t& context,
                                              std::shared_ptr<const protocols::TlsContext> tls);
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  Status Connect(const std::string& endpoint);

  // Sends one application message (a codec frame); before the connection is up it waits.
  // Never blocks (no high-water mark).
  Status Send(std::string_view message);
  // The same for a message in two pieces (codec.h FramePieces: a frame head and a payload
  // that lies elsewhere), sealed without joining them first.
  Status Send(std::string_view head, std::string_view payload);

  // Hands every application message already received to on_message(std::string_view), at
  // most `max` of them, without blocking. The view is valid only during the call. Returns
  // how many were handed over; Unavailable once the connection is lost (make a new Link).
  template <class F>
  Result<size_t> Receive(size_t max, F&& on_message) {
    size_t n = 0;
    while (n < max) {
      if (!opened_.empty()) {  // messages decrypted from an earlier frame
        on_message(std::string_view(opened_.front()));
        opened_.pop_front();
        ++n;
        continue;
      }
      SHOAL_ASSIGN_OR_RETURN(bool got, Next());
      if (!got) break;
      if (session_) {
        SHOAL_RETURN_IF_ERROR(Open());
        continue;
      }
      ++n;
      on_message(std::string_view(frame_));
    }
    return n;
  }

  // For an event loop: a descriptor that becomes readable when the socket's state may have
  // changed (ZMQ_FD). It is edge-like: after every Send or Receive, and before waiting on it
  // again, check Readable().
  int fd() const { return fd_; }
  // True when Receive may hand over a message (bytes buffered, or ZMQ_EVENTS has POLLIN).
  bool Readable();

  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  Link(zmq::context_t& context, std::shared_ptr<const protocols::TlsContext> tls);
  // Moves the next whole frame into frame_; false when none is ready yet.
  Result<bool> Next();
  // TLS: feeds frame_ to the session; answers handshake flights, sends what waited for the
  // handshake, and appends the messages it completes to opened_.
  Status Open();
  Status SendFrame(std::string_view frame, std::string_view more = {});
  void SendRaw(zmq::message_t&& body);

  zmq::socket_t socket_;
  int fd_ = -1;
  protocols::FrameReader reader_;
  bool has_bytes_ = false;
  std::string id_;                      // the connection, once up
  std::vector<zmq::message_t> outbox_;  // frames sent before the connection was up
  std::string frame_;
  std::shared_ptr<const protocols::TlsContext> tls_;
  std::unique_ptr<protocols::SecureSession> session_;
  std::deque<std::string> waiting_;  // plaintext messages sent before the handshake completed
  std::deque<std::string> opened_;   // decrypted messages not yet handed over
  Status failure_;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
};

}  // namespace shoal::loadgen
