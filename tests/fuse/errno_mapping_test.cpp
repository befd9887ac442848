// Error::to_errno, the one mapping from an Error to the errno the kernel sees
// (FUSE replies, fanotify denials). Expected values are the POSIX errnos a
// reader of a read-only image must get, written out by hand.
#include <gtest/gtest.h>

#include <cerrno>

#include "common/result.h"

namespace nydus {
namespace {

TEST(ErrnoMapping, AnAnswerKeepsItsErrno) {
  EXPECT_EQ(fs_answer(ENOENT, "no such name").error().to_errno(), ENOENT);
  EXPECT_EQ(fs_answer(ENODATA, "no such xattr").error().to_errno(), ENODATA);
  EXPECT_EQ(fs_answer(EROFS, "read-only").error().to_errno(), EROFS);
}

TEST(ErrnoMapping, EveryFailureIsEio) {
  // A reader's own errno (the blob file vanished: ENOENT) must not become the
  // answer to a valid lookup or read.
  EXPECT_EQ(sys_error("opening blob", ENOENT).error().to_errno(), EIO);
  EXPECT_EQ(sys_error("writing cache", ENOSPC).error().to_errno(), EIO);
  for (Errc c : {Errc::kInvalidArgument, Errc::kCorrupt, Errc::kUnsupported, Errc::kNotFound, Errc::kIo,
                 Errc::kExists, Errc::kNoSpace, Errc::kInternal})
    EXPECT_EQ(make_error(c, "x").error().to_errno(), EIO) << int(c);
  const Error no_errno{Errc::kAnswer, 0, "no errno"};
  EXPECT_EQ(no_errno.to_errno(), EIO);
}

}  // namespace
}  // namespace nydus
