//! How each request's asyncio task is made ([`TaskMaker`]): `asyncio.Task` called
//! directly when the loop has no task factory, the loop's `create_task` otherwise; the
//! task's name written without a formatter ([`task_name`]).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// What makes each request's task.
pub enum TaskMaker {
    /// `asyncio.Task(coroutine, loop=LOOP, name="request-N")` when the loop has no task
    /// factory: what `loop.create_task` calls then, in asyncio and uvloop alike, without
    /// the keyword-argument handling that cost uvloop about 1,600 instructions per
    /// request. The loop given saves the task looking up the running one (in Python
    /// 3.11 a getpid(2) system call per request); the name given saves the `Task-N`
    /// that 3.11 formats with `PyUnicode_FromFormat` (about 1,450 instructions).
    /// `kwargs` is one dict, its `name` replaced for each task.
    Task { task: PyObject, kwargs: Py<PyDict> },
    /// `loop.create_task(coroutine)`, the loop's task factory then makes it.
    Factory(PyObject),
}

impl TaskMaker {
    /// A factory is looked for once, after the lifespan startup (an app sets it
    /// there, if at all).
    pub fn new(py: Python<'_>, event_loop: &PyObject) -> PyResult<TaskMaker> {
        if event_loop.call_method0(py, "get_task_factory")?.is_none(py) {
            let kwargs = PyDict::new(py);
            kwargs.set_item(intern!(py, "loop"), event_loop)?;
            kwargs.set_item(intern!(py, "name"), py.None())?;
            Ok(TaskMaker::Task {
                task: py.import("asyncio")?.getattr("Task")?.unbind(),
                kwargs: kwargs.unbind(),
            })
        } else {
            Ok(TaskMaker::Factory(event_loop.getattr(py, "create_task")?))
        }
    }

    /// Request `id`'s task, running `coroutine`.
    pub fn spawn(&self, py: Python<'_>, id: u64, coroutine: PyObject) -> PyResult<()> {
        match self {
            TaskMaker::Task { task, kwargs } => {
                let kwargs = kwargs.bind(py);
                kwargs.set_item(intern!(py, "name"), task_name(py, id))?;
                task.bind(py).call((coroutine,), Some(kwargs))?;
            }
            TaskMaker::Factory(create_task) => {
                create_task.call1(py, (coroutine,))?;
            }
        }
        Ok(())
    }
}

/// `request-N`: the name of request `id`'s task, as a Python string.
fn task_name(py: Python<'_>, id: u64) -> Bound<'_, PyString> {
    let mut text = [0u8; TASK_NAME_MAX];
    PyString::new(py, task_name_text(id, &mut text))
}

/// The longest task name: the prefix and the 20 digits of `u64::MAX`.
const TASK_NAME_MAX: usize = TASK_NAME_PREFIX.len() + 20;
const TASK_NAME_PREFIX: &[u8] = b"request-";

/// `request-N` written into `text` without a formatter (3.11's own `Task-N` costs
/// about 1,450 instructions in `PyUnicode_FromFormat`).
fn task_name_text(id: u64, text: &mut [u8; TASK_NAME_MAX]) -> &str {
    const PREFIX: &[u8] = TASK_NAME_PREFIX;
    text[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = id;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    let end = PREFIX.len() + digits.len();
    text[PREFIX.len()..end].copy_from_slice(digits);
    // The text is ASCII.
    std::str::from_utf8(&text[..end]).unwrap_or("request")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_count_in_decimal() {
        let mut text = [0u8; TASK_NAME_MAX];
        assert_eq!(task_name_text(0, &mut text), "request-0");
        assert_eq!(task_name_text(7, &mut text), "request-7");
        assert_eq!(task_name_text(10, &mut text), "request-10");
        assert_eq!(task_name_text(1_234_567, &mut text), "request-1234567");
        assert_eq!(
            task_name_text(u64::MAX, &mut text),
            format!("request-{}", u64::MAX)
        );
        for id in [9, 99, 100, 65_535, 1 << 40] {
            assert_eq!(task_name_text(id, &mut text), format!("request-{id}"));
        }
    }
}
