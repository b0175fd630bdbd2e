//! `deploy` and `destroy` of a Kubernetes stack: what will be sent, a confirmation, then the
//! requests, one line each.

use super::Ctx;
use super::apply::{DeployArgs, DestroyArgs, approve};
use crate::app::kubernetes as kube;
use crate::error::Result;
use crate::exit::ExitStatus;

fn report(ctx: &Ctx, verb: &str, done: &[kube::Done]) {
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ verb: done })).unwrap_or_default()
        );
    } else if !ctx.global.quiet {
        for d in done {
            println!("  {verb} {}", d.what);
        }
    }
}

pub async fn deploy(ctx: &Ctx, args: DeployArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    // Everything renders (every secret resolves) before the cluster is asked anything.
    let objects = kube::objects(&session, args.lock_timeout)?;
    let requests = kube::apply_requests(&objects)?;
    let (client, source) = kube::connect(&session)?;
    eprintln!(
        "Server-side apply (field manager `agent-army`) of {} objects to {source}:",
        requests.len()
    );
    for (what, _) in &requests {
        eprintln!("  {what}");
    }
    approve(ctx, args.yes, "Apply them? Type `yes`:", "yes")?;
    let done = kube::send(&client, requests).await?;
    report(ctx, "applied", &done);
    Ok(ExitStatus::Success)
}

pub async fn destroy(ctx: &Ctx, args: DestroyArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let stack = session.config.stack.clone();
    let requests = kube::delete_requests(&session, args.delete_volumes);
    let (client, source) = kube::connect(&session)?;
    eprintln!("Delete the objects of stack `{stack}` by label from {source}:");
    for (what, _) in &requests {
        eprintln!("  {what}");
    }
    if !args.delete_volumes {
        eprintln!(
            "The agents' volumes and the namespace stay (their data); `--delete-volumes` removes them too."
        );
    }
    approve(
        ctx,
        args.yes,
        &format!("Type the stack name (`{stack}`) to confirm:"),
        &stack,
    )?;
    let done = kube::send(&client, requests).await?;
    report(ctx, "deleted", &done);
    Ok(ExitStatus::Success)
}
