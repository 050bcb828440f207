// layerforge/error.h — the exceptions the C++ API throws.
//
// Every kernel entry point validates its views and throws one of these; the Python bindings translate
// ShapeError/ValueError to Python's ValueError and DTypeError to TypeError, so no input from Python can
// crash the process.
#pragma once
#include <stdexcept>
#include <string>

namespace layerforge {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// A shape, size or argument value is wrong (Python: ValueError).
struct ValueError : Error {
    using Error::Error;
};
// A dtype is not supported or operands disagree in dtype (Python: TypeError).
struct DTypeError : Error {
    using Error::Error;
};

}  // namespace layerforge
