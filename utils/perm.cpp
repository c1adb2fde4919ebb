#include "utils/perm.hpp"

#include <unistd.h>

#include <algorithm>

namespace fusemirror::utils {

bool Credentials::in_group(gid_t g) const {
  return g == gid || std::find(groups.begin(), groups.end(), g) != groups.end();
}

bool permits(const struct stat& st, const Credentials& who, int want) {
  if (who.uid == 0) {
    if (!(want & X_OK)) return true;
    return S_ISDIR(st.st_mode) || (st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH));
  }
  mode_t bits;
  if (st.st_uid == who.uid) bits = (st.st_mode >> 6) & 7;
  else if (who.in_group(st.st_gid)) bits = (st.st_mode >> 3) & 7;
  else bits = st.st_mode & 7;
  const mode_t need = ((want & R_OK) ? 4 : 0) | ((want & W_OK) ? 2 : 0) | ((want & X_OK) ? 1 : 0);
  return (bits & need) == need;
}

}  // namespace fusemirror::utils
