//! `veza.notification.NotificationService`: protobuf in, domain call, protobuf out.

use futures::StreamExt;
use tonic::{Request, Response, Status};
use veza_proto::{
    common::Pagination,
    notification::{self as pb, notification_service_server::NotificationService},
};

use super::{caller, timestamp};
use crate::{
    domain::{Notifier, notify::Notification},
    shutdown::{BoxStream, Shutdown, guard},
};

/// The Notification service.
pub struct NotificationApi {
    notifier: Notifier,
    shutdown: Shutdown,
}

impl NotificationApi {
    /// The service over the notifications domain.
    pub fn new(notifier: Notifier, shutdown: Shutdown) -> NotificationApi {
        NotificationApi { notifier, shutdown }
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn send_notification(
        &self,
        req: Request<pb::SendNotificationRequest>,
    ) -> Result<Response<pb::SendNotificationResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let ids = self
            .notifier
            .send(&who, &r.user_ids, &r.r#type, &r.title, &r.body, r.data)
            .await?;
        Ok(Response::new(pb::SendNotificationResponse {
            success: true,
            notification_ids: ids,
        }))
    }

    async fn get_notifications(
        &self,
        req: Request<pb::GetNotificationsRequest>,
    ) -> Result<Response<pb::GetNotificationsResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let p = r.pagination.unwrap_or_default();
        let page = self
            .notifier
            .list(&who, p.page, p.page_size, r.unread_only)
            .await?;
        Ok(Response::new(pb::GetNotificationsResponse {
            notifications: page.notifications.into_iter().map(notification).collect(),
            pagination: Some(Pagination {
                page: page.page,
                page_size: page.page_size,
                total: clamp(page.total),
                total_pages: clamp(page.total_pages),
            }),
            unread_count: clamp(page.unread_count),
        }))
    }

    async fn mark_as_read(
        &self,
        req: Request<pb::MarkAsReadRequest>,
    ) -> Result<Response<pb::MarkAsReadResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let (updated, unread) = self
            .notifier
            .mark_read(&who, &r.notification_ids, r.all)
            .await?;
        Ok(Response::new(pb::MarkAsReadResponse {
            success: true,
            updated: clamp(updated),
            unread_count: clamp(unread),
        }))
    }

    async fn stream_notifications(
        &self,
        req: Request<pb::StreamNotificationsRequest>,
    ) -> Result<Response<BoxStream<pb::Notification>>, Status> {
        let who = caller(&req)?;
        let stream = self
            .notifier
            .stream(&who, req.into_inner().last_notification_id)
            .await?;
        let stream = stream.map(|item| item.map(notification).map_err(Status::from));
        Ok(Response::new(guard(stream, self.shutdown.clone())))
    }
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn notification(n: Notification) -> pb::Notification {
    pb::Notification {
        notification_id: n.id,
        user_id: n.user_id,
        r#type: n.kind,
        title: n.title,
        body: n.body,
        data: n.data,
        read: n.read,
        created_at: timestamp(n.created_at),
        read_at: timestamp(n.read_at),
    }
}
