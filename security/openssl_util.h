// Small helpers shared by Shoal's OpenSSL adapters (signing, PKI). Internal to common/.
#pragma once

#include <openssl/err.h>

#include <string>

namespace shoal::security {

// The oldest queued OpenSSL error as text; clears the queue. For error messages.
inline std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error recorded";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

// PEM passphrase callback that refuses to prompt on the terminal: encrypted keys fail to load.
inline int NoPassphrase(char*, int, int, void*) { return 0; }

}  // namespace shoal::security
