//! Why a provider did not start: how its process ended, or, when it does
//! not answer, what it and the machine are doing.

use std::process::{Child, Command};

/// How a child that should still run ended.
pub(super) fn exit_status(child: &mut Child) -> String {
    match child.wait() {
        Ok(status) => status.to_string(),
        Err(e) => format!("no status: {e}"),
    }
}

/// What a process that does not answer is doing, and what else the machine
/// is busy with: where the kernel has it waiting, its CPU time so far, the
/// load and the busiest processes.
pub(super) fn process_state(pid: u32) -> String {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{what}"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| format!("({e})"))
    };
    let busiest = Command::new("ps")
        .args(["-eo", "pid,stat,pcpu,etime,args", "--sort=-pcpu"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    // Each thread's name, state and where it sleeps in the kernel, and
    // (where gdb is installed) each thread's stack: a start that hangs says
    // where.
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .map(|task| {
                    let at = |what: &str| {
                        std::fs::read_to_string(task.path().join(what))
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_default()
                    };
                    let state = at("stat")
                        .rsplit(')')
                        .next()
                        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
                        .unwrap_or_default();
                    format!(
                        "  {} {} {state} {}",
                        task.file_name().to_string_lossy(),
                        at("comm"),
                        at("wchan")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let stacks = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 25",
        ])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with('#') || l.starts_with("Thread"))
                .take(300)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|e| format!("(no gdb: {e})"));
    format!(
        "pid {pid}: stat {}, wchan {}; load {}; threads:\n{threads}\nstacks:\n{stacks}\nbusiest:\n{busiest}",
        read("stat"),
        read("wchan"),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    )
}
