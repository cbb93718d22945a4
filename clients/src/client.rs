//! The client calls: [`Client`], one method per `JobService` use case (status, jobs, trigger,
//! runs, watch, cancel, pause, resume, update, reports), each mapping the server's status to an
//! [`Error::Rpc`] that names the method, plus the helpers the raw API lacks (paging through every
//! run, following a run to its end).

use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt, stream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::BearerAuth;
use crate::proto::job_service_client::JobServiceClient;
use crate::proto::{
    CancelRunRequest, CancelRunsRequest, CancelRunsResponse, GetJobRequest, GetReportRequest,
    GetRunRequest, GetStatusRequest, GetStatusResponse, Job, ListJobsRequest, ListReportsRequest,
    ListRunsRequest, MissedTickPolicy, OverlapPolicy, PauseJobRequest, Report, ResumeJobRequest,
    Run, RunEvent, RunState, TriggerJobRequest, UpdateJobRequest, WatchRunRequest,
};
use crate::{
    ClientBuilder, Error, Result, RunFilter, RunsPage, TriggerOptions, UpdateJob, json_to_struct,
};

/// The raw generated client as a [`Client`] uses it (channel plus [`BearerAuth`]).
pub type RawClient = JobServiceClient<InterceptedService<Channel, BearerAuth>>;

/// A connection to the control plane's `JobService`. Cheap to clone (clones share the HTTP/2
/// connection); every method takes `&self`.
#[derive(Debug, Clone)]
pub struct Client {
    api: RawClient,
    url: String,
}

impl Client {
    /// Wraps a connected raw client ([`ClientBuilder::connect`]).
    pub(crate) fn new(api: RawClient, url: String) -> Self {
        Self { api, url }
    }

    /// Connects without token or custom TLS (`https://` URLs use the web PKI roots).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), ticketmax_client::Error> {
    /// let client = ticketmax_client::Client::connect("http://127.0.0.1:50051").await?;
    /// println!("{} jobs", client.jobs().await?.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Client> {
        Self::builder(url).connect().await
    }

    /// A builder for token, TLS and timeouts.
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    /// The URL this client talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The generated client, for calls this wrapper does not cover.
    pub fn raw(&self) -> RawClient {
        self.api.clone()
    }

    /// `GetStatus`: scheduler status, every job with its next fire time and last run, the
    /// executors and this replica's role.
    pub async fn status(&self) -> Result<GetStatusResponse> {
        self.raw()
            .get_status(GetStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetStatus"))
    }

    /// `ListJobs`: every job.
    pub async fn jobs(&self) -> Result<Vec<Job>> {
        self.jobs_of_service("").await
    }

    /// `ListJobs(service)`: the jobs of one service, e.g. `booking-cleanup`.
    pub async fn jobs_of_service(&self, service: &str) -> Result<Vec<Job>> {
        self.raw()
            .list_jobs(ListJobsRequest {
                service: service.into(),
            })
            .await
            .map(|r| r.into_inner().jobs)
            .map_err(Error::rpc("ListJobs"))
    }

    /// `GetJob(name)`; [`Error::is_not_found`] for an unknown name.
    pub async fn job(&self, name: &str) -> Result<Job> {
        self.raw()
            .get_job(GetJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetJob"))
    }

    /// `TriggerJob(job)`: the new run (usually `RUN_STATE_QUEUED`, or `RUN_STATE_SKIPPED` when
    /// the job's overlap policy refuses it).
    pub async fn trigger(&self, job: &str) -> Result<Run> {
        self.trigger_with(job, TriggerOptions::default()).await
    }

    /// `TriggerJob` with an idempotency key and/or parameters.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use ticketmax_client::TriggerOptions;
    /// let run = client
    ///     .trigger_with(
    ///         "notifications/send-re-engagement-emails",
    ///         TriggerOptions {
    ///             idempotency_key: Some("campaign-2026-11".into()),
    ///             params: Some(serde_json::json!({"batch_limit": 100})),
    ///         },
    ///     )
    ///     .await?;
    /// println!("run {} is {}", run.id, run.state().as_str_name());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn trigger_with(&self, job: &str, options: TriggerOptions) -> Result<Run> {
        let params = match &options.params {
            None => None,
            Some(v @ serde_json::Value::Object(_)) => Some(json_to_struct(v)),
            Some(_) => {
                return Err(Error::InvalidInput(
                    "trigger params must be a JSON object".into(),
                ));
            }
        };
        self.raw()
            .trigger_job(TriggerJobRequest {
                job: job.into(),
                idempotency_key: options.idempotency_key.unwrap_or_default(),
                params,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("TriggerJob"))
    }

    /// Triggers `job` and waits until its run ends (see [`wait`](Self::wait)); returns the final
    /// run, whatever its state.
    pub async fn trigger_and_wait(&self, job: &str, timeout: Duration) -> Result<Run> {
        self.trigger_and_wait_with(job, TriggerOptions::default(), timeout)
            .await
    }

    /// [`trigger_with`](Self::trigger_with), then [`wait`](Self::wait).
    pub async fn trigger_and_wait_with(
        &self,
        job: &str,
        options: TriggerOptions,
        timeout: Duration,
    ) -> Result<Run> {
        let run = self.trigger_with(job, options).await?;
        if run.state().is_terminal() {
            return Ok(run);
        }
        self.wait(&run.id, timeout).await
    }

    /// Follows the run's events until it ends and returns the final run. Survives a dropped
    /// stream (it resumes after the last event seen). Fails with [`Error::Timeout`] after
    /// `timeout`; the run itself goes on.
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Result<Run> {
        let follow = async {
            let mut after = 0u64;
            loop {
                let mut events = self.watch(run_id, after);
                while let Some(item) = events.next().await {
                    match item {
                        Ok(e) => after = after.max(e.seq),
                        Err(e) if e.is_unavailable() => break,
                        Err(e) => return Err(e),
                    }
                }
                match self.run(run_id).await {
                    Ok(run) if run.state().is_terminal() => return Ok(run),
                    Ok(_) => {}
                    Err(e) if e.is_unavailable() => {}
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        match tokio::time::timeout(timeout, follow).await {
            Ok(result) => result,
            Err(_) => {
                let last_state = match self.run(run_id).await {
                    Ok(run) => run.state().as_str_name().to_string(),
                    Err(e) => format!("unknown: {e}"),
                };
                Err(Error::Timeout {
                    run_id: run_id.into(),
                    timeout,
                    last_state,
                })
            }
        }
    }

    /// `GetRun(id)`.
    pub async fn run(&self, run_id: &str) -> Result<Run> {
        self.raw()
            .get_run(GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetRun"))
    }

    /// `ListRuns`: one page of runs, newest first.
    pub async fn runs(&self, filter: RunFilter) -> Result<RunsPage> {
        let resp = self
            .raw()
            .list_runs(ListRunsRequest {
                job: filter.job.unwrap_or_default(),
                state: filter.state.unwrap_or(RunState::Unspecified).into(),
                page_size: filter.page_size,
                page_token: filter.page_token.unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(Error::rpc("ListRuns"))?
            .into_inner();
        Ok(RunsPage {
            runs: resp.runs,
            next_page_token: (!resp.next_page_token.is_empty()).then_some(resp.next_page_token),
        })
    }

    /// Every run matching `filter`, newest first, fetching pages as the stream is read.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use futures::TryStreamExt;
    /// use ticketmax_client::{RunFilter, proto::RunState};
    ///
    /// let failed: Vec<_> = client
    ///     .all_runs(RunFilter::job("payment-cleanup/cleanup-abandoned-payments").state(RunState::Failed))
    ///     .try_collect()
    ///     .await?;
    /// println!("{} failed runs", failed.len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn all_runs(
        &self,
        filter: RunFilter,
    ) -> impl Stream<Item = Result<Run>> + Send + Unpin + 'static {
        let client = self.clone();
        // State: the next token to ask for, or None when the last page was read.
        let pages = stream::try_unfold(
            Some(filter.page_token.clone().unwrap_or_default()),
            move |token| {
                let client = client.clone();
                let mut filter = filter.clone();
                async move {
                    let Some(token) = token else {
                        return Ok(None);
                    };
                    filter.page_token = (!token.is_empty()).then_some(token.clone());
                    let page = client.runs(filter).await?;
                    // A server that hands back the token it was given would loop forever.
                    let next = page.next_page_token.filter(|t| *t != token);
                    Ok(Some((page.runs, next)))
                }
            },
        );
        Box::pin(
            pages
                .map_ok(|runs| stream::iter(runs.into_iter().map(Ok)))
                .try_flatten(),
        )
    }

    /// `WatchRun(run_id, after_seq)`: the run's stored events after `after_seq` (0 = all), then
    /// live ones; the stream ends when the run has ended.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use futures::StreamExt;
    /// use ticketmax_client::proto::run_event::Kind;
    ///
    /// let mut events = client.watch("0192f5c1-...", 0);
    /// while let Some(event) = events.next().await {
    ///     match event?.kind {
    ///         Some(Kind::Progress(p)) => println!("{}/{} {}", p.done, p.total, p.message),
    ///         Some(Kind::Log(l)) => println!("[{}] {}", l.level, l.message),
    ///         Some(Kind::State(s)) => println!("state {}", s.state().as_str_name()),
    ///         None => {}
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(
        &self,
        run_id: &str,
        after_seq: u64,
    ) -> impl Stream<Item = Result<RunEvent>> + Send + Unpin + 'static {
        let mut api = self.raw();
        let req = WatchRunRequest {
            run_id: run_id.into(),
            after_seq,
        };
        Box::pin(
            stream::once(async move {
                api.watch_run(req)
                    .await
                    .map(|resp| resp.into_inner().map_err(Error::rpc("WatchRun")))
                    .map_err(Error::rpc("WatchRun"))
            })
            .try_flatten(),
        )
    }

    /// `CancelRun`: a queued run is cancelled at once; a running one is asked to stop at its next
    /// chunk boundary (the returned run may still be `RUNNING`). `FAILED_PRECONDITION` when the
    /// run has already ended.
    pub async fn cancel(&self, run_id: &str, reason: Option<&str>) -> Result<Run> {
        self.raw()
            .cancel_run(CancelRunRequest {
                run_id: run_id.into(),
                reason: reason.unwrap_or_default().into(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("CancelRun"))
    }

    /// `CancelRuns`: cancels every queued or running run matching `req` (its job, state,
    /// trigger and creation range), at most `req.limit` per call, the oldest first; with
    /// `dry_run` it only counts. `more` in the answer says runs are left.
    pub async fn cancel_runs(&self, req: CancelRunsRequest) -> Result<CancelRunsResponse> {
        self.raw()
            .cancel_runs(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("CancelRuns"))
    }

    /// `PauseJob`: the schedule stops firing (manual triggers still work).
    pub async fn pause(&self, name: &str) -> Result<Job> {
        self.raw()
            .pause_job(PauseJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("PauseJob"))
    }

    /// `ResumeJob`.
    pub async fn resume(&self, name: &str) -> Result<Job> {
        self.raw()
            .resume_job(ResumeJobRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("ResumeJob"))
    }

    /// `UpdateJob`: changes the fields that are set. A bad cron or timezone is
    /// `INVALID_ARGUMENT` and changes nothing.
    ///
    /// ```no_run
    /// # async fn demo(client: ticketmax_client::Client) -> Result<(), ticketmax_client::Error> {
    /// use ticketmax_client::UpdateJob;
    /// let job = client
    ///     .update(
    ///         "analytics/generate-daily-analytics",
    ///         UpdateJob {
    ///             schedule: Some("0 30 23 * * *".into()),
    ///             timezone: Some("Africa/Lagos".into()),
    ///             ..UpdateJob::default()
    ///         },
    ///     )
    ///     .await?;
    /// println!("next fire: {:?}", job.next_fire_time);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update(&self, name: &str, changes: UpdateJob) -> Result<Job> {
        self.raw()
            .update_job(UpdateJobRequest {
                name: name.into(),
                schedule: changes.schedule,
                timezone: changes.timezone,
                enabled: changes.enabled,
                overlap_policy: changes
                    .overlap_policy
                    .unwrap_or(OverlapPolicy::Unspecified)
                    .into(),
                missed_tick_policy: changes
                    .missed_tick_policy
                    .unwrap_or(MissedTickPolicy::Unspecified)
                    .into(),
                catch_up_window_seconds: changes.catch_up_window_seconds,
                timeout_seconds: changes.timeout_seconds,
                max_retries: changes.max_retries,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("UpdateJob"))
    }

    /// `ListReports`: the newest reports, optionally of one kind (e.g. `payment-analytics`);
    /// `limit` 1..=500, 0 for the server default (20).
    pub async fn reports(&self, kind: Option<&str>, limit: u32) -> Result<Vec<Report>> {
        self.raw()
            .list_reports(ListReportsRequest {
                kind: kind.unwrap_or_default().into(),
                limit,
            })
            .await
            .map(|r| r.into_inner().reports)
            .map_err(Error::rpc("ListReports"))
    }

    /// `GetReport(id)`.
    pub async fn report(&self, id: &str) -> Result<Report> {
        self.raw()
            .get_report(GetReportRequest { id: id.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::rpc("GetReport"))
    }
}
