from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from webapp import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("p/<slug:slug>/", views.project_detail, name="project"),
    path("p/<slug:slug>/items/<int:item_id>/", views.item_detail, name="item"),
    path("admin/", admin.site.urls),
]
