from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from webapp import views, views_annotate, views_exports, views_judges, views_routing
from webapp.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("p/<slug:slug>/", views.project_detail, name="project"),
    path("p/<slug:slug>/items/<int:item_id>/", views.item_detail, name="item"),
    path("p/<slug:slug>/annotate/", views_annotate.annotate, name="annotate"),
    path("p/<slug:slug>/annotate/<int:assignment_id>/submit", views_annotate.annotate_submit, name="annotate-submit"),
    path("p/<slug:slug>/annotate/<int:assignment_id>/skip", views_annotate.annotate_skip, name="annotate-skip"),
    path("p/<slug:slug>/annotations/<int:annotation_id>/edit", views_annotate.annotation_edit, name="annotation-edit"),
    path("p/<slug:slug>/judging/", views_judges.judging_page, name="judging"),
    path("p/<slug:slug>/judging/judges", views_judges.judge_create, name="judge-create"),
    path("p/<slug:slug>/judging/runs", views_judges.run_start, name="run-start"),
    path("p/<slug:slug>/judging/runs/<int:run_id>/", views_judges.run_detail, name="run"),
    path("p/<slug:slug>/judging/runs/<int:run_id>/cancel", views_judges.run_cancel, name="run-cancel"),
    path("p/<slug:slug>/judging/runs/<int:run_id>/retry", views_judges.run_retry, name="run-retry"),
    path("p/<slug:slug>/exports/", views_exports.exports_page, name="exports"),
    path("p/<slug:slug>/exports/new", views_exports.export_start, name="export-start"),
    path("p/<slug:slug>/exports/v<int:version>/<path:name>", views_exports.export_download, name="export-download"),
    path("p/<slug:slug>/routing/", views_routing.routing_page, name="routing"),
    path("p/<slug:slug>/routing/features", views_routing.features_start, name="routing-features"),
    path("p/<slug:slug>/routing/route", views_routing.routing_start, name="routing-start"),
    path("p/<slug:slug>/routing/preview", views_routing.routing_preview, name="routing-preview"),
    path("p/<slug:slug>/routing/tags", views_routing.tagging_start, name="routing-tags"),
    path("p/<slug:slug>/routing/proxy", views_routing.proxy_start, name="routing-proxy"),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
